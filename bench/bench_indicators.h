/*
 * bench_indicators.h - the ten real taxonomy indicators (and their units,
 * as in share/indicators.csv) that the benchmark programs put into each
 * report: one list, so every benchmark measures the same kind of report.
 */
#ifndef RSL_BENCH_INDICATORS_H
#define RSL_BENCH_INDICATORS_H

#define BENCH_N_INDICATORS 10

static const char *const bench_indicators[BENCH_N_INDICATORS][2] = {
    {"gov.cog_exercise_age_months", "months"},
    {"gov.alt_seat_activation_hours", "hours"},
    {"gov.critical_service_bcp_pct", "pct"},
    {"gov.secure_comms_availability_pct", "pct"},
    {"energy.oil_stock_days", "days"},
    {"energy.oil_stock_consumption_days", "days"},
    {"energy.gas_storage_fill_pct", "pct"},
    {"energy.critical_site_backup_fuel_hours", "hours"},
    {"population.reception_capacity_vs_scenario_pct", "pct"},
    {"population.evacuation_plan_coverage_pct", "pct"},
};

#endif
