/*
 * main.c - resilience-aggregator entry point; everything else is in
 * aggregator_core (daemon.c) so tests run the same code.
 */
#include "daemon.h"

int main(int argc, char **argv)
{
    return agg_daemon_main(argc, argv);
}
