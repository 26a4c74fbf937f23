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
    // inactive_thresholds_days (default 30, 60, 90). Microsoft's DAP APIs ask partners to remove DAP
    // relationships inactive for more than 90 days.
    dapInactiveDays: 90,
    // Warn about a DAP customer without GDAP access this many days without a partner sign-in: its DAP
    // is due for removal (Microsoft removes the remaining DAP relationships) and nothing replaces it.
    dapLosingAccessDays: 80,
    // Warn when a customer's GDAP access ends within this many days and nothing auto-extends it.
    gdapAccessEndingDays: 30,
    // An access assignment in pending for longer than this is stuck.
    gdapAssignmentPendingMinutes: 60,
    // Warn when a GDAP request has waited this many days for approval (Microsoft removes it at 90).
    gdapInvitePendingDays: 60,
    // A customer with no GDAP access now that had access within this range has lost it.
    gdapLostAccessLookback: '7d',
    // Warn this many days before a client certificate expires.
    certificateExpiryDays: 14,
    // Data older than this many poll intervals is stale.
    staleAfterPollIntervals: 3,
    // How long each condition must hold before its alert fires (one unit each: alert texts quote them).
    pollFailingFor: '30m',
    authFailingFor: '5m',
    throttledFor: '2h',
    gdapNoneVisibleFor: '1d',
    gdapWithoutAccessFor: '1h',
    gdapAssignmentFailingFor: '15m',
    gdapLostAccessFor: '5m',
    // A customer of the partner (any source, contracts included) that nobody can administer.
    customerWithoutAccessFor: '1d',
    // A DAP API that answers 404 or 410 (retired) for this long.
    apiRetiredFor: '1h',
    tokenStorePendingFor: '15m',
    configReloadFailedFor: '10m',
    exporterDownFor: '5m',
  },
}
