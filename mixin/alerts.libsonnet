// Alert rules; they need the recording rules. Every threshold comes from _config.
local oneLine(text) = std.strReplace(std.rstripChars(text, '\n'), '\n', ' ');
// '30m' as people say it: '30 minutes'. The _config durations the texts quote have one unit.
local human(duration) =
  local count = std.parseInt(duration[:std.length(duration) - 1]);
  local unit = { s: 'second', m: 'minute', h: 'hour', d: 'day', w: 'week' }[duration[std.length(duration) - 1]];
  '%d %s%s' % [count, unit, if count == 1 then '' else 's'];

{
  prometheusAlerts+:: {
    local c = $._config,
    // An alert with its severity, texts and runbook link; descriptions are written as blocks and
    // sent as one line.
    local alert(name, severity, duration, expr, summary, description) = {
      alert: name,
      expr: expr,
      'for': duration,
      labels: { severity: severity },
      annotations: {
        summary: summary,
        description: oneLine(description),
        runbook_url: c.runbookURLPattern % std.asciiLower(name),
      },
    },
    groups+: [
      {
        name: '%(groupPrefix)s.dap' % c,
        rules: [
          alert(
            'PartnerCenterDAPInactiveOver90Days', 'warning', '1h',
            'partnercenter_dap_inactive_customers_over_threshold{%(selector)s,threshold_days="%(dapInactiveDays)d"} > 0' % c,
            'Partner tenant {{ $labels.tenant }}: {{ $value }} DAP customers inactive for over %(dapInactiveDays)d days' % c,
            |||
              {{ $value }} customers of partner tenant {{ $labels.tenant }} have had no partner
              sign-in through DAP for more than %(dapInactiveDays)d days, or none on record. Microsoft asks
              partners to remove DAP relationships inactive for over 90 days (delegatedAdminStatistics
              reference); move the customers to GDAP first, then remove DAP.
            ||| % c,
          ),
          alert(
            'PartnerCenterDAPRelationshipsRemaining', 'info', '1h',
            'partnercenter_dap_customers{%(selector)s} > 0' % c,
            'Partner tenant {{ $labels.tenant }}: {{ $value }} customers still have DAP',
            |||
              {{ $value }} customers of partner tenant {{ $labels.tenant }} still have a DAP
              relationship. Microsoft removes the remaining DAP relationships (Partner Center
              announcements, July 2023): move them to GDAP.
            |||,
          ),
        ],
      },
      {
        name: '%(groupPrefix)s.gdap' % c,
        rules: [
          // One alert per customer; Alertmanager groups them per tenant.
          alert(
            'PartnerCenterDAPCustomerWithoutGDAP', 'warning', '1h',
            'partnercenter_dap_customer_without_gdap_info{%(selector)s} == 1' % c,
            'Partner tenant {{ $labels.tenant }}: customer {{ $labels.customer_name }} has DAP but no GDAP access',
            |||
              Customer {{ $labels.customer_name }} ({{ $labels.customer_tenant_id }}) of partner tenant
              {{ $labels.tenant }} still relies on DAP and nobody at the partner can administer it through
              GDAP (no active relationship with an active access assignment). When DAP is removed, the
              partner loses admin access to this customer: create a GDAP relationship with the roles you
              need, have the customer approve it and assign your security groups to it first.
            |||,
          ),
          // dapLosingAccessDays without a partner sign-in (or never, with DAP older than that), and
          // nothing in GDAP to replace DAP when it goes; the value is that age.
          alert(
            'PartnerCenterDAPCustomerLosingAccess', 'warning', '1h',
            |||
              (
                (time() - partnercenter_dap_customer_last_signin_timestamp_seconds{%(selector)s} > %(dapLosingAccessDays)d * 86400)
                  and partnercenter_dap_customer_last_signin_timestamp_seconds{%(selector)s} > 0
                or
                (time() - partnercenter_dap_customer_start_timestamp_seconds{%(selector)s} > %(dapLosingAccessDays)d * 86400)
                  and on (job, instance, tenant, customer_tenant_id)
                  partnercenter_dap_customer_last_signin_timestamp_seconds{%(selector)s} == 0
              )
              and on (job, instance, tenant, customer_tenant_id)
              partnercenter_dap_customer_without_gdap_info{%(selector)s}
            ||| % c,
            'Partner tenant {{ $labels.tenant }}: customer {{ $labels.customer_name }} is about to lose admin access',
            |||
              Customer {{ $labels.customer_name }} ({{ $labels.customer_tenant_id }}) of partner tenant
              {{ $labels.tenant }} has DAP, no GDAP access, and no partner sign-in for
              {{ $value | humanizeDuration }} (or none ever, with DAP that old). Microsoft removes the
              remaining DAP relationships and asks partners to remove those inactive for over 90 days:
              set up GDAP now, or the partner loses admin access to this customer when DAP goes.
            |||,
          ),
          // DAP customers, but not one GDAP relationship in any status, for gdapNoneVisibleFor.
          alert(
            'PartnerCenterGDAPNoneVisible', 'warning', c.gdapNoneVisibleFor,
            |||
              sum by (job, instance, tenant) (partnercenter_gdap_relationships{%(selector)s}) == 0
                and on (job, instance, tenant)
              max by (job, instance, tenant) (
                partnercenter_dap_enabled_customers{%(selector)s} or partnercenter_dap_customers{%(selector)s}
                  or partnercenter_customers{%(selector)s}
              ) > 0
            ||| % c,
            'Partner tenant {{ $labels.tenant }}: no GDAP relationships visible',
            |||
              Partner tenant {{ $labels.tenant }} has customers, but Microsoft Graph lists no GDAP
              relationship at all. Either the migration has not started, or the signed-in user is not in
              the partner's Admin Agents group: Graph then answers with an empty list, not an error.
              Add the user to Admin Agents and run login again, or read Graph app-only with graph_auth.
              While this fires, the per-customer PartnerCenterDAPCustomerWithoutGDAP and
              PartnerCenterCustomerWithoutGDAPAccess alerts are held back.
            |||,
          ),
          // Access is an active relationship with an active access assignment: one without any
          // gives nobody access.
          alert(
            'PartnerCenterGDAPRelationshipWithoutAccess', 'warning', c.gdapWithoutAccessFor,
            'partnercenter_gdap_relationship_active_access_assignments{%(selector)s} == 0' % c,
            'Partner tenant {{ $labels.tenant }}: the active GDAP relationship with {{ $labels.customer_name }} gives nobody access',
            |||
              The active GDAP relationship {{ $labels.relationship_id }} between partner tenant
              {{ $labels.tenant }} and customer {{ $labels.customer_name }} ({{ $labels.customer_tenant_id }})
              has no active access assignment, so no one at the partner can use its roles. Assign a
              security group of the partner to it (Partner Center: the customer's Admin relationships),
              or fix the assignment that is pending or failed.
            |||,
          ),
          // The value is the assignment's age since its last change.
          alert(
            'PartnerCenterGDAPAccessAssignmentFailing', 'warning', c.gdapAssignmentFailingFor,
            |||
              time() - partnercenter_gdap_access_assignment_last_modified_timestamp_seconds{%(selector)s,status="error"}
                or
              time() - partnercenter_gdap_access_assignment_last_modified_timestamp_seconds{%(selector)s,status="pending"}
                > %(gdapAssignmentPendingMinutes)d * 60
            ||| % c,
            'Partner tenant {{ $labels.tenant }}: a GDAP access assignment for {{ $labels.customer_name }} is {{ $labels.status }}',
            |||
              An access assignment of the GDAP relationship {{ $labels.relationship_id }} with customer
              {{ $labels.customer_name }} ({{ $labels.customer_tenant_id }}) of partner tenant
              {{ $labels.tenant }} is {{ $labels.status }} (last changed {{ $value | humanizeDuration }}
              ago), so security group {{ $labels.access_container_id }} has no access through it. Delete
              the assignment and create it again; check that the group still exists in the partner tenant.
            |||,
          ),
          // A customer's access is the latest end among the relationships that give access, so a
          // replaced relationship does not fire while a newer one covers the customer.
          alert(
            'PartnerCenterGDAPCustomerAccessEndingSoon', 'warning', '1h',
            |||
              partnercenter_gdap_customer_access_end_timestamp_seconds{%(selector)s} - time() < %(gdapAccessEndingDays)d * 86400
                and on (job, instance, tenant, customer_tenant_id)
              partnercenter_gdap_customer_access_auto_extends{%(selector)s} == 0
            ||| % c,
            'Partner tenant {{ $labels.tenant }}: GDAP access to {{ $labels.customer_name }} ends in {{ $value | humanizeDuration }}',
            |||
              The partner's GDAP access to customer {{ $labels.customer_name }}
              ({{ $labels.customer_tenant_id }}) of partner tenant {{ $labels.tenant }} ends in
              {{ $value | humanizeDuration }}: no relationship that gives access lasts longer or
              auto-extends. Turn on auto-extend (not possible with Global Administrator) or have the
              customer approve a new relationship, and assign your security groups to it, before then.
            |||,
          ),
          // Fires when the last relationship that gave access passes its end date (expiring), or its
          // last active assignment goes; it stays until lostAccessLookback has passed.
          alert(
            'PartnerCenterGDAPCustomerLostAccess', 'critical', c.gdapLostAccessFor,
            |||
              partnercenter_gdap_customer_access{%(selector)s} == 0
                and on (job, instance, tenant, customer_tenant_id)
              max_over_time(partnercenter_gdap_customer_access{%(selector)s}[%(gdapLostAccessLookback)s]) == 1
            ||| % c,
            'Partner tenant {{ $labels.tenant }}: lost GDAP access to customer {{ $labels.customer_name }}',
            |||
              Nobody at partner tenant {{ $labels.tenant }} can administer customer
              {{ $labels.customer_name }} ({{ $labels.customer_tenant_id }}) through GDAP any more, though
              someone could within the last %(lookback)s: the last relationship that gave access ended
              or was terminated, or its last active access assignment went. Request a new relationship
              and have the customer approve it.
            ||| % { lookback: human(c.gdapLostAccessLookback) },
          ),
          // Every customer, from any source: with partner_customers, also those with neither DAP nor
          // a relationship, whom nobody at the partner can administer at all.
          alert(
            'PartnerCenterCustomerWithoutGDAPAccess', 'warning', c.customerWithoutAccessFor,
            'partnercenter_gdap_customer_access{%(selector)s} == 0' % c,
            'Partner tenant {{ $labels.tenant }}: nobody can administer customer {{ $labels.customer_name }} through GDAP',
            |||
              For %s nobody at partner tenant {{ $labels.tenant }} has been able to administer customer
              {{ $labels.customer_name }} ({{ $labels.customer_tenant_id }}) through GDAP: no active
              relationship with an active access assignment. If the partner supports this customer,
              request a GDAP relationship with the roles you need, have the customer approve it and
              assign your security groups to it.
            ||| % [human(c.customerWithoutAccessFor)],
          ),
          // The value is the request's age.
          alert(
            'PartnerCenterGDAPInvitePending', 'info', '1h',
            |||
              time() - partnercenter_gdap_relationship_created_timestamp_seconds{%(selector)s,status="approvalPending"}
                > %(gdapInvitePendingDays)d * 86400
            ||| % c,
            'Partner tenant {{ $labels.tenant }}: GDAP request {{ $labels.relationship_name }} has waited {{ $value | humanizeDuration }}',
            |||
              The GDAP relationship request {{ $labels.relationship_name }} of partner tenant
              {{ $labels.tenant }}{{ with $labels.customer_name }} to customer {{ . }}{{ end }} has waited for
              the customer's approval for {{ $value | humanizeDuration }}. Microsoft removes requests left
              in approvalPending after 90 days: send the customer the approval link again, or let it go.
            |||,
          ),
          alert(
            'PartnerCenterGDAPGlobalAdminRole', 'warning', '1h',
            'partnercenter_gdap_relationship_end_timestamp_seconds{%(selector)s,global_admin="true"}' % c,
            'Partner tenant {{ $labels.tenant }}: GDAP relationship with {{ $labels.customer_name }} has the Global Administrator role',
            |||
              The GDAP relationship {{ $labels.relationship_name }} between partner tenant
              {{ $labels.tenant }} and customer {{ $labels.customer_name }} includes the Global
              Administrator role. That goes against least privilege and stops the relationship from
              auto-extending: replace it with one that has only the roles you need.
            |||,
          ),
        ],
      },
      {
        name: '%(groupPrefix)s.health' % c,
        rules: [
          alert(
            'PartnerCenterExporterPollFailing', 'warning', c.pollFailingFor,
            |||
              partnercenter_exporter_poll_success{%(selector)s} == 0
                unless on (job, instance, tenant, collector)
              partnercenter_api_retired{%(selector)s} == 1
            ||| % c,
            'Partner tenant {{ $labels.tenant }}: {{ $labels.collector }} polls failing',
            // Not %-formatted: the text holds printf verbs of its own.
            |||
              Polls of collector {{ $labels.collector }} for partner tenant {{ $labels.tenant }} on
              {{ $labels.instance }} have failed for %s, last with reason
              {{ with printf "partnercenter_exporter_last_poll_error{job='%%s',instance='%%s',tenant='%%s',collector='%%s'} == 1" $labels.job $labels.instance $labels.tenant $labels.collector | query }}{{ . | first | label "reason" }}{{ else }}unknown{{ end }}.
              The figures shown are from the last successful poll. The exporter log says why.
            ||| % [human(c.pollFailingFor)],
          ),
          // A retired API is a state, not an outage: the poll-failing and stale-data alerts leave it
          // to this one.
          alert(
            'PartnerCenterAPIRetired', 'info', c.apiRetiredFor,
            'partnercenter_api_retired{%(selector)s} == 1' % c,
            'Partner tenant {{ $labels.tenant }}: the API behind {{ $labels.collector }} is retired',
            |||
              Partner Center has answered 404 or 410 for %s to collector {{ $labels.collector }} of
              partner tenant {{ $labels.tenant }} on {{ $labels.instance }}: Microsoft retires the DAP
              APIs after the DAP deprecation. The exporter keeps the last good figures and does not count
              this as a failing poll. Drop {{ $labels.collector }} from the tenant's collectors, or fix
              its endpoint URL if that was changed, and reload the config.
            ||| % [human(c.apiRetiredFor)],
          ),
          // Firing needs a recent auth error and a failing last poll, so it resolves at the next success.
          alert(
            'PartnerCenterExporterAuthFailing', 'critical', c.authFailingFor,
            |||
              tenant_reason:partnercenter_exporter_poll_errors:increase1h{%(selector)s,reason="auth"} > 0
                and on(job, instance, tenant, collector)
              partnercenter_exporter_poll_success{%(selector)s} == 0
            ||| % c,
            'Partner tenant {{ $labels.tenant }}: sign-in for {{ $labels.collector }} is failing',
            |||
              The identity platform, Partner Center or Microsoft Graph refuses the credentials that
              collector {{ $labels.collector }} of partner tenant {{ $labels.tenant }} on
              {{ $labels.instance }} uses. It will not recover by itself: usually the refresh token
              expired or was revoked, or a permission is missing. The exporter log says which; for an
              expired or revoked token, run partnercenter-exporter login for this tenant.
            |||,
          ),
          alert(
            'PartnerCenterExporterDataStale', 'warning', '5m',
            |||
              tenant:partnercenter_exporter_last_success_age:poll_intervals{%(selector)s} > %(staleAfterPollIntervals)d
                unless on (job, instance, tenant, collector)
              partnercenter_api_retired{%(selector)s} == 1
            ||| % c,
            'Partner tenant {{ $labels.tenant }}: {{ $labels.collector }} data is {{ $value | printf "%.1f" }} poll intervals old',
            |||
              The last successful {{ $labels.collector }} poll of partner tenant {{ $labels.tenant }} on
              {{ $labels.instance }} is more than %(staleAfterPollIntervals)d poll intervals old, so its figures and the alerts
              based on them are out of date.
            ||| % c,
          ),
          alert(
            'PartnerCenterExporterThrottled', 'warning', c.throttledFor,
            'tenant_reason:partnercenter_exporter_poll_errors:increase1h{%(selector)s,reason="throttled"} > 0' % c,
            'Partner tenant {{ $labels.tenant }}: {{ $labels.collector }} keeps being throttled',
            |||
              Partner Center, Microsoft Graph or the identity platform has answered 429 to collector
              {{ $labels.collector }} of partner tenant {{ $labels.tenant }} on {{ $labels.instance }}
              in every hour for %s, beyond the short waits the exporter absorbs itself
              ({{ $value | printf "%%.0f" }} failed polls in the last hour). Something else may share
              the partner's quota.
            ||| % [human(c.throttledFor)],
          ),
          // Any: each is a bug in the exporter, which goes on with the last good data.
          alert(
            'PartnerCenterExporterInternalError', 'warning', '1m',
            'increase(partnercenter_exporter_internal_errors_total{%(selector)s}[1h]) > 0' % c,
            'partnercenter-exporter {{ $labels.instance }} hit an internal error ({{ $labels.stage }})',
            |||
              The exporter on {{ $labels.instance }} met an unexpected error in its poll loop (stage
              {{ $labels.stage }}) in the last hour. It goes on with the last good data, but this is a
              bug: its log holds the traceback (msg="unexpected error in the poll loop").
            |||,
          ),
          // The rotated refresh token lives in memory only: a restart now would need `login`.
          alert(
            'PartnerCenterExporterTokenStoreWritePending', 'warning', c.tokenStorePendingFor,
            'max by (job, instance, tenant) (partnercenter_exporter_token_store_write_pending{%(selector)s}) == 1' % c,
            "Partner tenant {{ $labels.tenant }}: the rotated refresh token is not saved to its token cache",
            |||
              For %s the exporter on {{ $labels.instance }} has not been able to write partner
              tenant {{ $labels.tenant }}'s rotated refresh token to its token cache: the file (a
              full disk, a read-only mount) or the Key Vault secret (its log says why). Polls go on
              with the token in memory; a restart before the write succeeds needs `login` again.
            ||| % [human(c.tokenStorePendingFor)],
          ),
          // Expiry needs no config change: warn while there is time to upload a new certificate.
          alert(
            'PartnerCenterExporterClientCertificateExpiring', 'warning', '1h',
            |||
              min by (job, instance, tenant) (partnercenter_exporter_client_certificate_expiry_timestamp_seconds{%(selector)s})
                - time() < %(certificateExpiryDays)d * 86400
            ||| % c,
            'Partner tenant {{ $labels.tenant }}: a client certificate expires within %d days, or has expired' % c.certificateExpiryDays,
            |||
              A client certificate the exporter on {{ $labels.instance }} signs in with for partner
              tenant {{ $labels.tenant }} expires in {{ $value | humanizeDuration }} (negative:
              it has expired, and the tenant's polls fail with reason auth). Create a new one,
              upload its public part to the app registration, replace the file and reload.
            |||,
          ),
          // A failed SIGHUP or web config edit leaves the previous config running: the change the
          // operator made is not in force.
          alert(
            'PartnerCenterExporterConfigReloadFailed', 'warning', c.configReloadFailedFor,
            'max_over_time(partnercenter_exporter_config_last_reload_successful{%(selector)s}[5m]) == 0' % c,
            'partnercenter-exporter {{ $labels.instance }}: the {{ $labels.config }} file failed to reload',
            |||
              The exporter on {{ $labels.instance }} could not load its changed {{ $labels.config }} file
              ({{ if eq $labels.config "web" }}--web.config.file{{ else }}--config.file{{ end }}) and is still
              running the previous one, so the change is not in force. Its log says why
              (msg="config reload failed" or msg="web config reload failed"); fix the file, then reload again.
            |||,
          ),
          alert(
            'PartnerCenterExporterDown', 'critical', c.exporterDownFor,
            'up{%(selector)s} == 0 or absent(up{%(selector)s})' % c,
            'partnercenter-exporter {{ with $labels.instance }}{{ . }}{{ else }}(no target){{ end }} is down',
            |||
              Prometheus cannot scrape partnercenter-exporter
              {{ with $labels.instance }}on {{ . }}{{ else }}: the job has no targets{{ end }}.
              No DAP figures or poll alerts arrive while it is down.
            |||,
          ),
        ],
      },
    ],
  },
}
