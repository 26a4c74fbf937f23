// Recording rules. Names follow level:metric:operations; every series keeps the job, instance and
// tenant labels (and collector, for the exporter's own poll metrics). The alerts use these.
{
  prometheusRules+:: {
    local c = $._config,
    groups+: [
      {
        name: '%(groupPrefix)s.recording' % c,
        rules: [
          {
            // Share of DAP customers past each inactivity threshold (0..1); clamp_min avoids
            // 0/0 = NaN for a tenant without DAP customers.
            record: 'tenant:partnercenter_dap_inactive_customers_over_threshold:ratio',
            expr: |||
              partnercenter_dap_inactive_customers_over_threshold{%(selector)s}
                / ignoring(threshold_days) group_left
              clamp_min(partnercenter_dap_customers{%(selector)s}, 1)
            ||| % c,
          },
          {
            // Share of DAP customers that already have an active GDAP relationship (0..1): the
            // migration's progress. 1 for a tenant without DAP customers: nothing left to move.
            record: 'tenant:partnercenter_dap_customers_with_gdap:ratio',
            expr: |||
              1 - partnercenter_dap_customers_without_gdap{%(selector)s}
                / clamp_min(partnercenter_dap_enabled_customers{%(selector)s}, 1)
            ||| % c,
          },
          {
            record: 'tenant:partnercenter_exporter_last_success_age:seconds',
            expr: 'time() - partnercenter_exporter_last_success_timestamp_seconds{%(selector)s}' % c,
          },
          {
            // Age of the data in poll intervals, so one staleness rule fits every poll_interval.
            record: 'tenant:partnercenter_exporter_last_success_age:poll_intervals',
            expr: |||
              (time() - partnercenter_exporter_last_success_timestamp_seconds{%(selector)s})
                / partnercenter_exporter_poll_interval_seconds{%(selector)s}
            ||| % c,
          },
          {
            // Retries make several errors per poll, so alerts look at an hour, not at single errors.
            record: 'tenant_reason:partnercenter_exporter_poll_errors:increase1h',
            expr: 'increase(partnercenter_exporter_poll_errors_total{%(selector)s}[1h])' % c,
          },
        ],
      },
    ],
  },
}
