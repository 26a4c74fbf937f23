// partnercenter-exporter monitoring mixin: prometheusAlerts, prometheusRules and grafanaDashboards.
// Settings are in config.libsonnet; README.md shows how to import it into kube-prometheus.
(import 'config.libsonnet') +
(import 'alerts.libsonnet') +
(import 'rules.libsonnet') +
(import 'dashboards.libsonnet')
