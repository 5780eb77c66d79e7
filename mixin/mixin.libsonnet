// tiw-push-exporter's monitoring mixin: alerts and the Grafana dashboard from one _config
// (config.libsonnet). `mixin/build` renders them into the files the project ships.
(import 'config.libsonnet') +
(import 'alerts.libsonnet') +
(import 'dashboards.libsonnet')
