// What a user of the mixin may override, e.g.
//   (import 'mixin.libsonnet') + { _config+:: { selector: 'job="tiw", namespace="classes"' } }
{
  _config+:: {
    // Selects the exporter's series: every alert and dashboard query carries it.
    selector: 'job="tiw-push-exporter"',
    // Where each alert's runbook_url points: this plus the lower-cased alert name.
    // The project's home is Cargo.toml's `repository`; a test keeps the two in step.
    runbookURLBase: 'https://github.com/tiw-push-exporter/tiw-push-exporter/blob/main/docs/runbooks.md#',
    // Labels that tell replicas of one exporter apart: per-task alerts aggregate them away, so
    // replicas reporting the same task raise one alert.
    replicaLabels: ['instance', 'pod'],
    // Labels a page about the exporter or an app needs.
    exporterLabels: ['job', 'instance'],

    // Thresholds.
    preparedFor: '2m',  // a task PREPARED this long is stuck
    exceptionsWindow: '15m',  // TiwPushExceptionsRising counts ExceptionCnt increases over this
    exceptionsThreshold: 10,
    finishesWindow: '10m',  // the aggregate EXCEPTION/FAILED fallbacks look back this far
    // A per-task finish alert is an event: it fires when the exporter sees the end and ends this
    // long after, whatever retention.stopped_tasks is. It also bridges an exporter outage (or a
    // restart, on its store or an empty one) of up to this long without resolving and re-firing.
    finishAlertWindow: '30m',
    finishAlertWindowSeconds: 1800,
    apiDownFor: '5m',
    callbacksWindow: '15m',  // TiwCallbacksMissing: tasks ended, no callback, over this window
    exporterDownFor: '2m',
    configReloadFailedFor: '5m',
    pollInterval: 15,  // seconds: the exporter's poll.interval
    pollingBehindFactor: 4,  // TiwPollingBehind: a sweep this many poll.intervals long
    pollingBehindFor: '15m',
    storeFailingFor: '1m',
    overloadedFor: '10m',
    relayBacklogSeconds: 300,  // TiwCallbackRelayBacklog: the oldest relayed callback waits this long
    relayBacklogFor: '5m',
    transcodeBacklogSeconds: 600,  // TiwTranscodeBacklog: a document transcode QUEUED this long
    transcodeBacklogFor: '5m',
    recordPreparedFor: '2m',  // TiwRecordStuckPreparing: a recording PREPARED this long
    recordUploadSeconds: 1800,  // TiwRecordUploadStuck: STOPPED this long after RecordStopTime
    recordUploadFor: '5m',
    recordInterruptsWindow: '15m',  // TiwRecordInterruptsRising: interruptions of one recording over this
    recordInterruptsThreshold: 5,
  },
}
