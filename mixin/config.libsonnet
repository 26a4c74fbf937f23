// What a user of the mixin may change. Override in your own jsonnet:
//   (import 'partnercenter-exporter-mixin/mixin.libsonnet') + { _config+:: { selector: 'job="pcx"' } }
{
  _config+:: {
    // Label matchers that pick this exporter's series: every rule and dashboard query carries them.
    selector: 'job="partnercenter"',
    // Where each alert's runbook_url points; %s is the alert's name in lower case (the heading
    // anchors of docs/runbook.md).
    runbookURLPattern: 'https://github.com/partnercenter-exporter/partnercenter-exporter/blob/main/docs/runbook.md#%s',
    // Rule group names start with this.
    groupPrefix: 'partnercenter-exporter',

    // The DAP inactivity alert looks at this threshold_days label: it must be one of the exporter's
    // inactive_thresholds_days (default 30, 60, 90). Microsoft's removal rule is 90 days.
    dapInactiveDays: 90,
    // Warn this many days without a partner sign-in, ahead of Microsoft's 90-day DAP removal.
    dapLosingAccessDays: 80,
    // Warn when a GDAP relationship without auto-extend ends within this many days.
    gdapExpiryDays: 14,
    // Data older than this many poll intervals is stale.
    staleAfterPollIntervals: 3,
    // How long each condition must hold before its alert fires (one unit each: alert texts quote them).
    pollFailingFor: '30m',
    authFailingFor: '5m',
    throttledFor: '2h',
    gdapNoneVisibleFor: '1d',
    tokenStorePendingFor: '15m',
    configReloadFailedFor: '10m',
    exporterDownFor: '5m',
  },
}
