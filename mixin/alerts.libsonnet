// The alert rules. Every alert has severity, summary, description and an absolute runbook_url
// (docs/runbooks.md); exporter and app alerts keep the labels a page needs (job, instance,
// sdk_app_id), per-task alerts aggregate the replica labels away.
{
  prometheusAlerts+:: {
    local cfg = $._config,
    local sel = cfg.selector,
    local exporter = std.join(', ', cfg.exporterLabels),
    local replicas = std.join(', ', cfg.replicaLabels),
    local alert(name, severity, expr, summary, description, forTime=null) = {
      alert: name,
      expr: expr,
      [if forTime != null then 'for']: forTime,
      labels: { severity: severity },
      annotations: {
        summary: summary,
        description: description,
        runbook_url: cfg.runbookURLBase + std.asciiLower(name),
      },
    },
    // One series per task, whichever replica reports it.
    local perTask(metric, matchers) =
      'max without (%s) (%s{%s, %s})' % [replicas, metric, sel, matchers],
    // The aggregate counters of finishes, for apps whose per-task series are off
    // (per_task_metrics: false): an app with per-task series alerts per task instead. Keyed on the
    // exporter saying so (a gauge read over the window, so an outage neither starts nor ends it):
    // an absent or stale target can never satisfy it.
    local finishesWithoutPerTask(reason) = |||
      sum by (job, sdk_app_id) (max without (%(replicas)s) (increase(tiw_push_tasks_finished_total{%(sel)s, reason="%(reason)s"}[%(window)s]))) > 0
      and on (job, sdk_app_id)
      max by (job, sdk_app_id) (last_over_time(tiw_exporter_per_task_metrics_enabled{%(sel)s}[%(window)s])) == 0
    ||| % { replicas: replicas, sel: sel, reason: reason, window: cfg.finishesWindow },
    // A finish as an event: the task's failure series (with Tencent's code) while the end the
    // exporter saw is younger than the window. Both are read over the window, so a stale or absent
    // target (the exporter down or restarting) neither ends the alert nor starts a new one; a task
    // first seen already ended has no end timestamp (history is not news) and never fires.
    local finishEvent(reason) = |||
      max without (%(replicas)s) (last_over_time(tiw_push_task_failure_info{%(sel)s, reason="%(reason)s"}[%(window)s]))
      and on (job, sdk_app_id, task_id)
      (time() - max without (%(replicas)s) (last_over_time(tiw_push_task_ended_timestamp_seconds{%(sel)s}[%(window)s]))) < %(seconds)d
    ||| % { replicas: replicas, sel: sel, reason: reason, window: cfg.finishAlertWindow, seconds: cfg.finishAlertWindowSeconds },
    // The same for a recording: `metric` (its finish reason or failure series) matching `reason`
    // while the end the exporter saw is younger than the window.
    local recordFinishEvent(metric, reason) = |||
      max without (%(replicas)s) (last_over_time(%(metric)s{%(sel)s, %(label)s=~"%(reason)s"}[%(window)s]))
      and on (job, sdk_app_id, task_id)
      (time() - max without (%(replicas)s) (last_over_time(tiw_record_task_ended_timestamp_seconds{%(sel)s}[%(window)s]))) < %(seconds)d
    ||| % { replicas: replicas, sel: sel, metric: metric, label: if metric == 'tiw_record_task_failure_info' then 'code' else 'reason', reason: reason, window: cfg.finishAlertWindow, seconds: cfg.finishAlertWindowSeconds },
    // Tencent's reason in words, from the failure series' labels.
    local why = '{{ if $labels.code }} Tencent says {{ $labels.code }}{{ if $labels.push_code }}, push code {{ $labels.push_code }}{{ end }}{{ if $labels.trtc_code }}, TRTC code {{ $labels.trtc_code }}{{ end }}.{{ end }}',

    groups+: [
      {
        name: 'tiw-push-tasks',
        rules: [
          alert(
            'TiwPushFinishedWithException',
            'critical',
            finishEvent('EXCEPTION'),
            'Whiteboard push {{ $labels.task_id }} ended with EXCEPTION',
            'Push task {{ $labels.task_id }} of SdkAppId {{ $labels.sdk_app_id }} in room {{ $labels.room_id }} stopped with FinishReason=EXCEPTION: the class\'s whiteboard recording is incomplete.' + why,
          ),
          alert(
            'TiwPushFailed',
            'critical',
            finishEvent('FAILED'),
            'Whiteboard push {{ $labels.task_id }} failed',
            'Push task {{ $labels.task_id }} of SdkAppId {{ $labels.sdk_app_id }} in room {{ $labels.room_id }} failed: nothing was pushed.' + why + ' The task page (/-/task) has Tencent\'s message.',
          ),
          alert(
            'TiwPushExceptionFinishes',
            'critical',
            finishesWithoutPerTask('EXCEPTION'),
            '{{ $value | printf "%.0f" }} whiteboard pushes of SdkAppId {{ $labels.sdk_app_id }} ended with EXCEPTION',
            '{{ $value | printf "%.0f" }} push tasks of SdkAppId {{ $labels.sdk_app_id }} stopped with FinishReason=EXCEPTION in the last ' + cfg.finishesWindow + '. Per-task series are off for this app (per_task_metrics: false), so the tasks are in the exporter\'s log, not in this alert.',
          ),
          alert(
            'TiwPushFailures',
            'critical',
            finishesWithoutPerTask('FAILED'),
            '{{ $value | printf "%.0f" }} whiteboard pushes of SdkAppId {{ $labels.sdk_app_id }} failed',
            '{{ $value | printf "%.0f" }} push tasks of SdkAppId {{ $labels.sdk_app_id }} failed (FailedOperation.WhiteboardPush) in the last ' + cfg.finishesWindow + '. Per-task series are off for this app (per_task_metrics: false): the exporter\'s log has each task and Tencent\'s reason.',
          ),
          alert(
            'TiwPushStuckPreparing',
            'warning',
            perTask('tiw_push_task_status', 'status="PREPARED"') + ' == 1',
            'Whiteboard push {{ $labels.task_id }} has been PREPARED for over ' + cfg.preparedFor,
            'Push task {{ $labels.task_id }} of SdkAppId {{ $labels.sdk_app_id }} in room {{ $labels.room_id }} has not started pushing after ' + cfg.preparedFor + '.',
            cfg.preparedFor,
          ),
          alert(
            'TiwPushExceptionsRising',
            'warning',
            'sum by (%s, sdk_app_id) (increase(tiw_push_exceptions_total{%s}[%s])) > %d' % [exporter, sel, cfg.exceptionsWindow, cfg.exceptionsThreshold],
            'Push exceptions are rising for SdkAppId {{ $labels.sdk_app_id }}',
            '{{ $value | printf "%.0f" }} push exceptions (ExceptionCnt) in the last ' + cfg.exceptionsWindow + ' for SdkAppId {{ $labels.sdk_app_id }}.',
          ),
        ],
      },
      {
        // Real-time recording tasks (apps[].record): the same events as push, from the
        // tiw_record_* families.
        name: 'tiw-record-tasks',
        rules: [
          alert(
            'TiwRecordFinishedAbnormally',
            'critical',
            recordFinishEvent('tiw_record_task_finish_reason', 'EXCEPTION|FORCE_STOP'),
            'Real-time recording {{ $labels.task_id }} ended with {{ $labels.reason }}',
            'Recording task {{ $labels.task_id }} of SdkAppId {{ $labels.sdk_app_id }} in room {{ $labels.room_id }} ended with FinishReason={{ $labels.reason }}{{ if eq $labels.reason "FORCE_STOP" }} (Tencent stops a recording paused over 90 minutes or recording over 24 hours){{ end }}: the class\'s recording is incomplete.',
          ),
          alert(
            'TiwRecordFailed',
            'critical',
            recordFinishEvent('tiw_record_task_failure_info', '.+'),
            'Real-time recording {{ $labels.task_id }} failed',
            'Recording task {{ $labels.task_id }} of SdkAppId {{ $labels.sdk_app_id }} in room {{ $labels.room_id }} failed (Tencent says {{ $labels.code }}): the class has no recording. The exporter\'s log has Tencent\'s message.',
          ),
          alert(
            'TiwRecordStuckPreparing',
            'warning',
            perTask('tiw_record_task_status', 'status="PREPARED"') + ' == 1',
            'Real-time recording {{ $labels.task_id }} has been PREPARED for over ' + cfg.recordPreparedFor,
            'Recording task {{ $labels.task_id }} of SdkAppId {{ $labels.sdk_app_id }} in room {{ $labels.room_id }} has not started recording after ' + cfg.recordPreparedFor + ': the recorder has not joined the room.',
            cfg.recordPreparedFor,
          ),
          alert(
            'TiwRecordUploadStuck',
            'warning',
            |||
              (time() - max without (%(replicas)s) (tiw_record_task_stop_timestamp_seconds{%(sel)s})) > %(seconds)d
              and on (job, sdk_app_id, task_id)
              max without (%(replicas)s) (tiw_record_task_status{%(sel)s, status="STOPPED"}) == 1
            ||| % { replicas: replicas, sel: sel, seconds: cfg.recordUploadSeconds },
            'The video of recording {{ $labels.task_id }} is not ready {{ $value | humanizeDuration }} after it stopped',
            'Recording task {{ $labels.task_id }} of SdkAppId {{ $labels.sdk_app_id }} stopped {{ $value | humanizeDuration }} ago and is still STOPPED (processing and uploading its video): the class\'s replay is not available yet.',
            cfg.recordUploadFor,
          ),
          alert(
            'TiwRecordInterruptsRising',
            'warning',
            'max without (%s) (max_over_time(tiw_record_task_stream_interrupts{%s}[%s]) - min_over_time(tiw_record_task_stream_interrupts{%s}[%s])) > %d' % [replicas, sel, cfg.recordInterruptsWindow, sel, cfg.recordInterruptsWindow, cfg.recordInterruptsThreshold],
            'Streams keep breaking in the recording of room {{ $labels.room_id }}',
            '{{ $value | printf "%.0f" }} stream interruptions (Interrupts[].Count) in the last ' + cfg.recordInterruptsWindow + ' in recording task {{ $labels.task_id }} of SdkAppId {{ $labels.sdk_app_id }}: the recording will have gaps.',
          ),
        ],
      },
      {
        name: 'tiw-push-exporter',
        rules: [
          alert(
            'TiwApiDown',
            'critical',
            'min by (%s, sdk_app_id) (tiw_up{%s}) == 0' % [exporter, sel],
            'Tencent Cloud API unusable for SdkAppId {{ $labels.sdk_app_id }}',
            'For ' + cfg.apiDownFor + ' {{ $labels.instance }} has had no usable answer from Tencent Cloud for SdkAppId {{ $labels.sdk_app_id }} (network, credentials, or the app\'s service state): push tasks of this app are not watched, and its per-task alerts are held back (inhibited).',
            cfg.apiDownFor,
          ),
          alert(
            'TiwApiRateLimited',
            'warning',
            'sum by (%s, action) (increase(tiw_exporter_api_requests_total{%s, code=~"RequestLimitExceeded.*"}[5m])) > 0' % [exporter, sel],
            'Tencent Cloud rate-limits {{ $labels.action }}',
            '{{ $value | printf "%.0f" }} {{ $labels.action }} requests of {{ $labels.instance }} were refused with RequestLimitExceeded in 5 minutes: something else uses the same account\'s 20 requests/s.',
          ),
          alert(
            'TiwCallbacksRejected',
            'warning',
            'sum by (%s, sdk_app_id, event_type, outcome) (increase(tiw_exporter_callbacks_total{%s, outcome=~"bad_signature|unsigned|expired"}[10m])) > 0' % [exporter, sel],
            'Callbacks refused: {{ $labels.outcome }} (SdkAppId {{ $labels.sdk_app_id }})',
            '{{ $value | printf "%.0f" }} {{ $labels.event_type }} callbacks for SdkAppId {{ $labels.sdk_app_id }} were refused by {{ $labels.instance }} as {{ $labels.outcome }} in 10 minutes: a forgery, a wrong callback key, an app without callback_key, or clock skew.',
          ),
          alert(
            'TiwCallbacksContradicted',
            'warning',
            'sum by (%s, sdk_app_id, event_type) (increase(tiw_exporter_callbacks_total{%s, outcome="contradicted"}[10m])) > 0' % [exporter, sel],
            'Callbacks contradicted by the API (SdkAppId {{ $labels.sdk_app_id }})',
            '{{ $value | printf "%.0f" }} {{ $labels.event_type }} callbacks for SdkAppId {{ $labels.sdk_app_id }} claimed what DescribeWhiteboardPush then denied, in 10 minutes: the API\'s answer was kept. A signed callback body can be forged by whoever saw one Sign until its ExpireTime.',
          ),
          alert(
            'TiwCallbacksMissing',
            'warning',
            // Per exporter instance: with shards, one that gets no callbacks is not hidden by
            // another that does. FAILED tasks never pushed, and TIW sends no callback for them.
            |||
              (sum by (%(exporter)s, sdk_app_id) (increase(tiw_push_tasks_finished_total{%(sel)s, reason!="FAILED"}[%(window)s])) > 0)
              unless on (%(exporter)s, sdk_app_id)
              (sum by (%(exporter)s, sdk_app_id) (increase(tiw_exporter_callbacks_total{%(sel)s, outcome=~"accepted|duplicate"}[%(window)s])) > 0)
              and on (%(exporter)s, sdk_app_id)
              (max by (%(exporter)s, sdk_app_id) (last_over_time(tiw_exporter_callbacks_configured{%(sel)s}[%(window)s])) == 1)
            ||| % { exporter: exporter, sel: sel, window: cfg.callbacksWindow },
            'Push tasks of SdkAppId {{ $labels.sdk_app_id }} end but no TIW callback reaches {{ $labels.instance }}',
            'Tasks of SdkAppId {{ $labels.sdk_app_id }} have ended in the last ' + cfg.callbacksWindow + ', learned by polling alone, and {{ $labels.instance }} has accepted no callback of this app for ' + cfg.callbacksWindow + ': the callback URL is probably not registered (tiw-push-exporter callback show), not routed to this instance, or TIW signs with another key. An app without callback_key is poll-only and never alerts.',
            cfg.callbacksWindow,
          ),
          alert(
            'TiwCallbackRelayBacklog',
            'warning',
            'max by (%s, sdk_app_id) (tiw_exporter_callback_forward_oldest_age_seconds{%s}) > %d' % [exporter, sel, cfg.relayBacklogSeconds],
            'Callbacks wait for the backend of SdkAppId {{ $labels.sdk_app_id }} ({{ $value | humanizeDuration }})',
            'The oldest callback {{ $labels.instance }} relays to the backend of SdkAppId {{ $labels.sdk_app_id }} (callback_forward_url) was received {{ $value | humanizeDuration }} ago: the backend is down, slow or failing (5xx), so the product learns of pushes late. Nothing is lost while the queue has room; the landing page shows the backend\'s answers.',
            cfg.relayBacklogFor,
          ),
          alert(
            'TiwCallbackRelayDeadLetters',
            'warning',
            'sum by (%s, sdk_app_id) (increase(tiw_exporter_callback_forward_total{%s, outcome="dead_letter"}[10m])) > 0' % [exporter, sel],
            'The backend of SdkAppId {{ $labels.sdk_app_id }} refused relayed callbacks for good',
            '{{ $value | printf "%.0f" }} callbacks relayed by {{ $labels.instance }} were answered 4xx by the backend of SdkAppId {{ $labels.sdk_app_id }} in 10 minutes: they are kept as dead letters, not retried. The backend refuses what TIW sends (a wrong URL path, its own signature check with another key).',
          ),
          alert(
            'TiwCallbackRelayQueueFull',
            'critical',
            'sum by (%s, sdk_app_id) (increase(tiw_exporter_callback_forward_total{%s, outcome="refused_full"}[10m])) > 0' % [exporter, sel],
            'Relay queue full: TIW callbacks of SdkAppId {{ $labels.sdk_app_id }} are refused',
            '{{ $value | printf "%.0f" }} callbacks for SdkAppId {{ $labels.sdk_app_id }} were answered 503 by {{ $labels.instance }} in 10 minutes because its relay queue is full (callback.forward.max_queue or max_queue_bytes): TIW retries each a few times and then gives up, and the backend never sees it. Bring the backend back, or raise the bound.',
          ),
          alert(
            'TiwTasksRefused',
            'warning',
            'sum by (%s, sdk_app_id) (increase(tiw_exporter_tasks_dropped_total{%s, reason="limit"}[10m])) > 0' % [exporter, sel],
            'retention.max_tasks reached: new tasks of SdkAppId {{ $labels.sdk_app_id }} are refused',
            '{{ $value | printf "%.0f" }} new tasks of SdkAppId {{ $labels.sdk_app_id }} were refused by {{ $labels.instance }} in 10 minutes because retention.max_tasks unfinished tasks are tracked: a flood of forged ids on an app that allows unsigned callbacks, or a fleet larger than the bound.',
          ),
          alert(
            'TiwPollingBehind',
            'warning',
            'max by (%s) (tiw_exporter_poll_sweep_duration_seconds{%s}) > %d' % [exporter, sel, cfg.pollInterval * cfg.pollingBehindFactor],
            'tiw-push-exporter {{ $labels.instance }} takes {{ $value | humanizeDuration }} to poll every task once',
            'A polling sweep over all unfinished tasks on {{ $labels.instance }} has taken over ' + std.toString(cfg.pollingBehindFactor) + ' poll intervals (' + std.toString(cfg.pollInterval * cfg.pollingBehindFactor) + ' s) for ' + cfg.pollingBehindFor + ': the fleet needs more than the API budget allows, so without callbacks an ended task is noticed late.',
            cfg.pollingBehindFor,
          ),
          alert(
            'TiwTranscodeBacklog',
            'warning',
            'time() - min without (%s) (tiw_running_tasks_oldest_created_timestamp_seconds{%s, task_type=~"TranscodeH5|TranscodeJPG", status="QUEUED"}) > %d' % [replicas, sel, cfg.transcodeBacklogSeconds],
            'Document transcoding of app {{ $labels.sdk_app_id }} is backed up ({{ $labels.task_type }})',
            'The oldest {{ $labels.task_type }} task of app {{ $labels.sdk_app_id }} has been QUEUED at Tencent for {{ $value | humanizeDuration }} (DescribeRunningTasks): teachers\' documents are not being converted. Transcode concurrency is per app; check for a flood of uploads, or open a ticket with Tencent.',
            cfg.transcodeBacklogFor,
          ),
          alert(
            'TiwStoreWriteFailing',
            'critical',
            'min by (%s) (tiw_exporter_store_last_write_successful{%s}) == 0' % [exporter, sel],
            'tiw-push-exporter {{ $labels.instance }} cannot write its store',
            'The store at state.path on {{ $labels.instance }} has failed to write for ' + cfg.storeFailingFor + ' (disk full?): callbacks are answered 503 and TIW gives up after its retries.',
            cfg.storeFailingFor,
          ),
          alert(
            'TiwConfigReloadFailed',
            'warning',
            'max by (%s) (tiw_exporter_config_last_reload_successful{%s}) == 0' % [exporter, sel],
            'tiw-push-exporter {{ $labels.instance }} refused its new configuration',
            'The last configuration reload on {{ $labels.instance }} failed ' + cfg.configReloadFailedFor + ' ago or more: the previous configuration is still in force, and a restart would fail the same way. The exporter\'s log says what is wrong, key by key.',
            cfg.configReloadFailedFor,
          ),
          alert(
            'TiwWebConfigReloadFailed',
            'warning',
            'max by (%s) (tiw_exporter_web_config_last_reload_successful{%s}) == 0' % [exporter, sel],
            'tiw-push-exporter {{ $labels.instance }} refused a change to its web config',
            'A change to --web.config.file (or a certificate or key it names) on {{ $labels.instance }} has been refused for ' + cfg.configReloadFailedFor + ': the previous TLS and basic-auth settings stay in force. An empty or half-written file, a broken hash, or a change that removes every basic-auth user or adds or removes TLS is refused while serving. The exporter\'s log says why.',
            cfg.configReloadFailedFor,
          ),
          alert(
            'TiwExporterOverloaded',
            'warning',
            'sum by (%s, handler, reason) (increase(tiw_exporter_http_requests_refused_total{%s}[10m])) > 0' % [exporter, sel],
            'tiw-push-exporter refuses {{ $labels.handler }} requests ({{ $labels.reason }})',
            '{{ $value | printf "%.0f" }} {{ $labels.handler }} requests to {{ $labels.instance }} were refused as {{ $labels.reason }} in 10 minutes, for ' + cfg.overloadedFor + ' on end: callbacks past callback.max_in_flight (TIW retries them, but only a few times), scrapes past --web.max-requests, or callback bodies slower than --web.read-timeout.',
            cfg.overloadedFor,
          ),
          alert(
            'TiwExporterDown',
            'critical',
            'max by (%s) (up{%s}) == 0' % [exporter, sel],
            'tiw-push-exporter {{ $labels.instance }} is down',
            'Prometheus has not scraped tiw-push-exporter at {{ $labels.instance }} for ' + cfg.exporterDownFor + ': no push task is watched there and no callback is received.',
            cfg.exporterDownFor,
          ),
          alert(
            'TiwExporterAbsent',
            'critical',
            'absent(up{%s})' % sel,
            'No tiw-push-exporter target is known to Prometheus',
            'Prometheus has had no target matching {' + std.strReplace(sel, '"', "'") + '} for ' + cfg.exporterDownFor + ': the exporter is gone from service discovery (deleted, renamed, or its ServiceMonitor no longer selected), so nothing watches push tasks and TiwExporterDown cannot fire.',
            cfg.exporterDownFor,
          ),
        ],
      },
    ],
  },
}
