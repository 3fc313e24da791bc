/*
 * main.c - resilience-ctl entry point; everything else is in ctl_core (ctl.c)
 * so tests run the same code.
 */
#include <stdio.h>

#include "ctl.h"

int main(int argc, char **argv)
{
    return ctl_main(argc, argv, stdout, stderr);
}
