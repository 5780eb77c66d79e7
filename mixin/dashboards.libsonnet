// The Grafana dashboard. Every query carries $job and $instance (and $sdk_app_id where the series
// has one); per-task series aggregate the replica labels away, so replicas reporting one task show
// it once. A row per concern: tasks, failures, callbacks, the API budget, the exporter.
{
  grafanaDashboards+:: {
    local cfg = $._config,
    local replicas = std.join(', ', cfg.replicaLabels),
    local ds = { type: 'prometheus', uid: '${DS_PROMETHEUS}' },
    // Matchers of the dashboard's variables.
    local sel = 'job=~"$job", instance=~"$instance"',
    local app = sel + ', sdk_app_id=~"$sdk_app_id"',
    // A per-task family, one series per task whatever the replicas.
    local task(metric, matchers='') =
      'max without (%s) (%s{%s%s})' % [replicas, metric, app, if matchers == '' then '' else ', ' + matchers],

    local target(expr, legend='', refId='A', instant=false, table=false) = {
      datasource: ds,
      expr: expr,
      refId: refId,
      legendFormat: legend,
      instant: instant,
      range: !instant,
      [if table then 'format']: 'table',
    },
    local refIds = ['A', 'B', 'C', 'D', 'E', 'F'],
    local targets(list) = [list[i] { refId: refIds[i] } for i in std.range(0, std.length(list) - 1)],

    local panel(type, title, description, w, h, list, unit=null, extra={}) = {
      type: type,
      title: title,
      description: description,
      datasource: ds,
      gridPos: { w: w, h: h },
      targets: targets(list),
      fieldConfig: { defaults: if unit == null then {} else { unit: unit }, overrides: [] },
      options: {},
    } + extra,
    local timeseries(title, description, w, h, list, unit) = panel('timeseries', title, description, w, h, list, unit),
    local stat(title, description, w, h, list, unit=null, mappings=[], steps=null, textMode='auto') =
      panel('stat', title, description, w, h, list, unit, {
        fieldConfig+: { defaults+: {
          [if mappings != [] then 'mappings']: mappings,
          [if steps != null then 'thresholds']: { mode: 'absolute', steps: steps },
        } },
        options: { reduceOptions: { calcs: ['lastNotNull'] }, colorMode: 'background', graphMode: 'none', textMode: textMode },
      }),
    local table(title, description, w, h, list, rename, units={}, exclude=[], extraTransforms=[]) =
      panel('table', title, description, w, h, list, null, {
        fieldConfig+: { overrides: [
          { matcher: { id: 'byName', options: name }, properties: [{ id: 'unit', value: units[name] }] }
          for name in std.objectFields(units)
        ] },
        transformations: [{ id: 'merge', options: {} }] + extraTransforms + [{
          id: 'organize',
          options: {
            excludeByName: { Time: true, __name__: true, job: true } + { [n]: true for n in exclude },
            renameByName: rename,
          },
        }],
      }),
    local upDown(down, up) = [{ type: 'value', options: { '0': { text: down, color: 'red' }, '1': { text: up, color: 'green' } } }],
    local row(title) = { type: 'row', title: title, collapsed: false, panels: [], gridPos: { w: 24, h: 1 } },

    // Lays panels out left to right, wrapping at 24 columns; rows take a line of their own.
    local layout(panels) = std.foldl(
      function(acc, p)
        local x = if p.type == 'row' || acc.x + p.gridPos.w > 24 then 0 else acc.x;
        local y = if p.type == 'row' || acc.x + p.gridPos.w > 24 then acc.y + acc.h else acc.y;
        local placed = p { id: acc.id, gridPos+: { x: x, y: y } };
        {
          panels: acc.panels + [placed],
          id: acc.id + 1,
          x: x + p.gridPos.w,
          y: y,
          h: if x == 0 then p.gridPos.h else std.max(acc.h, p.gridPos.h),
        },
      panels,
      { panels: [], id: 1, x: 0, y: 0, h: 0 },
    ).panels,

    local variable(name, label, query, multi=true) = {
      name: name,
      label: label,
      type: 'query',
      datasource: ds,
      query: { query: query, refId: name },
      definition: query,
      multi: multi,
      includeAll: true,
      allValue: '.*',
      current: {},
      refresh: 2,
      sort: 1,
      hide: 0,
      options: [],
    },

    // Tasks that ended with EXCEPTION or FAILED at any time in the range (value 1), and a per-task
    // family's last value in the range joined to them: the table outlives the exporter's retention.
    local finishedInRange =
      'max without (%s) (max_over_time(tiw_push_task_finish_reason{%s, reason=~"EXCEPTION|FAILED"}[$__range])) == 1' % [replicas, app],
    local joinFinish(metric, scale='') =
      'max without (%s) (last_over_time(%s{%s}[$__range]))%s * on (sdk_app_id, task_id, room_id) group_left (reason) (%s)' % [replicas, metric, app, scale, finishedInRange],

    'tiw-push-exporter.json': {
      __inputs: [{
        name: 'DS_PROMETHEUS',
        label: 'Prometheus',
        description: 'The Prometheus that scrapes tiw-push-exporter',
        type: 'datasource',
        pluginId: 'prometheus',
        pluginName: 'Prometheus',
      }],
      __requires: [
        { type: 'grafana', id: 'grafana', name: 'Grafana', version: '10.0.0' },
        { type: 'datasource', id: 'prometheus', name: 'Prometheus', version: '1.0.0' },
        { type: 'panel', id: 'stat', name: 'Stat', version: '' },
        { type: 'panel', id: 'table', name: 'Table', version: '' },
        { type: 'panel', id: 'timeseries', name: 'Time series', version: '' },
      ],
      title: 'TIW whiteboard push',
      uid: 'tiw-push-exporter',
      description: 'Tencent Cloud Interactive Whiteboard push tasks, from tiw-push-exporter: status, failures, durations, API and callback health.',
      tags: ['tiw', 'tencent-cloud', 'tiw-push-exporter'],
      schemaVersion: 39,
      version: 1,
      editable: true,
      graphTooltip: 1,
      time: { from: 'now-6h', to: 'now' },
      refresh: '30s',
      timezone: '',
      links: [{ title: 'Runbooks', type: 'link', url: std.split(cfg.runbookURLBase, '#')[0], targetBlank: true }],
      annotations: { list: [] },
      templating: { list: [
        {
          name: 'DS_PROMETHEUS',
          label: 'Data source',
          type: 'datasource',
          query: 'prometheus',
          current: {},
          hide: 0,
          refresh: 1,
          regex: '',
          options: [],
        },
        variable('job', 'Job', 'label_values(tiw_exporter_build_info{%s}, job)' % cfg.selector),
        variable('instance', 'Instance', 'label_values(tiw_exporter_build_info{job=~"$job"}, instance)'),
        variable('sdk_app_id', 'SdkAppId', 'label_values(tiw_up{%s}, sdk_app_id)' % sel),
      ] },
      panels: layout([
        row('Tasks'),
        stat('Tasks by status', 'Tracked push tasks per status right now (tiw_push_tasks).', 8, 5,
             [target('sum by (status) (max without (%s) (tiw_push_tasks{%s}))' % [replicas, app], '{{status}}', instant=true)],
             'none', textMode='value_and_name'),
        timeseries('Starts and finishes per hour', 'Distinct tasks started, and ended per finish reason, over the last hour (increase of the counters over 1h).', 10, 5, [
          target('sum(max without (%s) (increase(tiw_push_tasks_started_total{%s}[1h])))' % [replicas, app], 'started'),
          target('sum by (reason) (max without (%s) (increase(tiw_push_tasks_finished_total{%s}[1h])))' % [replicas, app], 'finished {{reason}}'),
        ], 'short'),
        stat('EXCEPTION finishes in range', 'Tasks that ended with FinishReason=EXCEPTION in the dashboard\'s time range: each one is a class whose recording is incomplete.', 3, 5,
             [target('sum(max without (%s) (increase(tiw_push_tasks_finished_total{%s, reason="EXCEPTION"}[$__range])))' % [replicas, app], 'EXCEPTION', instant=true)],
             'none', steps=[{ color: 'green', value: null }, { color: 'red', value: 1 }]),
        stat('FAILED tasks in range', 'Tasks that failed outright (FailedOperation.WhiteboardPush, e.g. an illegal UserSig) in the time range.', 3, 5,
             [target('sum(max without (%s) (increase(tiw_push_tasks_finished_total{%s, reason="FAILED"}[$__range])))' % [replicas, app], 'FAILED', instant=true)],
             'none', steps=[{ color: 'green', value: null }, { color: 'orange', value: 1 }]),
        timeseries('Tasks in PREPARED', 'Tasks that joined but have not started pushing. One that stays longer than ' + cfg.preparedFor + ' raises TiwPushStuckPreparing.', 12, 7,
                   [target('sum by (sdk_app_id) (max without (%s) (tiw_push_tasks{%s, status="PREPARED"}))' % [replicas, app], '{{sdk_app_id}}')], 'short'),
        table('PREPARED tasks', 'Tasks in PREPARED now, with when the exporter last heard of them.', 12, 7, [
          target(task('tiw_push_task_last_update_timestamp_seconds') + ' * 1000 * on (sdk_app_id, task_id, room_id) group_left (status) ' + task('tiw_push_task_status', 'status="PREPARED"'), instant=true, table=true),
          target(task('tiw_push_task_status', 'status="PREPARED"'), instant=true, table=true),
        ], { 'Value #A': 'last update' }, { 'last update': 'dateTimeFromNow' }, ['Value #B'], [{
          id: 'filterByValue',
          options: { type: 'include', match: 'all', filters: [{ fieldName: 'Value #B', config: { id: 'equal', options: { value: 1 } } }] },
        }]),
        table('Tracked tasks', 'Every tracked task: status, room, push user, duration (stop − start once ended; for a running task its age, time() − start), exceptions and when the exporter last learned anything about it (polled in the background; callbacks update it at once).', 24, 10, [
          target('(%s == 1)' % task('tiw_push_task_status'), instant=true, table=true),
          target(task('tiw_push_task_info'), instant=true, table=true),
          target('%s or (time() - %s)' % [task('tiw_push_task_duration_seconds'), task('tiw_push_task_start_timestamp_seconds')], instant=true, table=true),
          target(task('tiw_push_task_exceptions'), instant=true, table=true),
          target(task('tiw_push_task_last_update_timestamp_seconds') + ' * 1000', instant=true, table=true),
        ], { 'Value #C': 'duration / age', 'Value #D': 'exceptions', 'Value #E': 'last update' }, { 'duration / age': 's', 'last update': 'dateTimeFromNow' }, ['Value #A', 'Value #B']),

        row('Failures'),
        table('EXCEPTION and FAILED finishes in range', 'Tasks that ended with EXCEPTION or FAILED at any time in the dashboard\'s range, as long as Prometheus keeps them: set the range to last night to see what the night brought. With push user, duration and exception count.', 16, 9, [
          target(finishedInRange, instant=true, table=true),
          target(joinFinish('tiw_push_task_info'), instant=true, table=true),
          target(joinFinish('tiw_push_task_duration_seconds'), instant=true, table=true),
          target(joinFinish('tiw_push_task_exceptions'), instant=true, table=true),
          target(joinFinish('tiw_push_task_stop_timestamp_seconds', ' * 1000'), instant=true, table=true),
        ], { 'Value #C': 'duration', 'Value #D': 'exceptions', 'Value #E': 'stopped at' }, { duration: 's', 'stopped at': 'dateTimeAsIso' }, ['Value #A', 'Value #B']),
        timeseries('Exceptions per minute', 'Rate of increases of ExceptionCnt over all tasks, per app (tiw_push_exceptions_total).', 8, 9,
                   [target('sum by (sdk_app_id) (max without (%s) (rate(tiw_push_exceptions_total{%s}[$__rate_interval]))) * 60' % [replicas, app], '{{sdk_app_id}}')], 'short'),
        timeseries('Push duration percentiles', 'p50, p90 and p99 of the push duration of tasks as they end (tiw_push_duration_seconds).', 12, 8, [
          target('histogram_quantile(%s, sum by (le) (rate(tiw_push_duration_seconds_bucket{%s}[$__rate_interval])))' % [q, app], 'p' + std.strReplace(q, '0.', ''))
          for q in ['0.5', '0.9', '0.99']
        ], 's'),
        timeseries('Average push duration by finish reason', 'Mean push duration of tasks ended in the last hour, per finish reason.', 12, 8,
                   [target('sum by (reason) (increase(tiw_push_duration_seconds_sum{%s}[1h])) / sum by (reason) (increase(tiw_push_duration_seconds_count{%s}[1h]))' % [app, app], '{{reason}}')], 's'),

        row('Callbacks'),
        timeseries('Callbacks by outcome', 'TIW callbacks received per second by outcome: accepted, duplicate, ignored, or refused (malformed, unknown_app, unsigned, bad_signature, expired). Per app: sdk_app_id="" counts bodies that name no configured app. contradicted: the API\'s answer overruled an accepted callback.', 12, 7,
                   [target('sum by (instance, sdk_app_id, outcome) (rate(tiw_exporter_callbacks_total{%s, sdk_app_id=~"$sdk_app_id|"}[$__rate_interval]))' % sel, '{{instance}} {{sdk_app_id}} {{outcome}}')], 'reqps'),
        timeseries('Callback delay', 'Time from an event\'s Timestamp to its receipt, p50 and p95 per event type.', 12, 7, [
          target('histogram_quantile(%s, sum by (le, event_type) (rate(tiw_exporter_callback_delay_seconds_bucket{%s}[$__rate_interval])))' % [q, sel], 'p%s {{event_type}}' % std.strReplace(q, '0.', ''))
          for q in ['0.5', '0.95']
        ], 's'),
        timeseries('Relayed to your backend', 'Relay mode (apps[].callback_forward_url): callbacks queued, delivered (2xx), retried (the backend failed or timed out), dead-lettered (4xx) and refused because the queue was full (503 to TIW), per second.', 12, 7,
                   [target('sum by (instance, sdk_app_id, outcome) (rate(tiw_exporter_callback_forward_total{%s, sdk_app_id=~"$sdk_app_id"}[$__rate_interval]))' % sel, '{{instance}} {{sdk_app_id}} {{outcome}}')], 'reqps'),
        timeseries('Relay queue', 'Callbacks waiting for the backend, and the age of the oldest: TiwCallbackRelayBacklog past %d s. Dead letters kept (4xx answers).' % cfg.relayBacklogSeconds, 12, 7, [
          target('max by (instance, sdk_app_id) (tiw_exporter_callback_forward_queue_requests{%s, sdk_app_id=~"$sdk_app_id"})' % sel, 'queued {{instance}} {{sdk_app_id}}'),
          target('max by (instance, sdk_app_id) (tiw_exporter_callback_forward_oldest_age_seconds{%s, sdk_app_id=~"$sdk_app_id"})' % sel, 'oldest, s {{instance}} {{sdk_app_id}}'),
          target('max by (instance, sdk_app_id) (tiw_exporter_callback_forward_dead_letters{%s, sdk_app_id=~"$sdk_app_id"})' % sel, 'dead letters {{instance}} {{sdk_app_id}}'),
        ], 'short'),

        row('Real-time recording'),
        timeseries('Recording tasks by status', 'Tracked real-time recording tasks (apps with record: true) per status: PREPARED, RECORDING, PAUSED, STOPPED (the video is processed and uploaded), FINISHED, FAILED.', 12, 7,
                   [target('sum by (status) (max without (%s) (tiw_record_tasks{%s}))' % [replicas, app], '{{status}}')], 'short'),
        timeseries('Recordings ended by reason', 'Recordings ended per hour by finish reason: EXCEPTION and FORCE_STOP (paused over 90 minutes, or recording over 24 hours) and FAILED cost a class its recording.', 12, 7,
                   [target('sum by (reason) (max without (%s) (increase(tiw_record_tasks_finished_total{%s}[1h])))' % [replicas, app], '{{reason}}')], 'short'),
        table('Recordings not finished well', 'Recording tasks that ended with EXCEPTION, FORCE_STOP or FAILED, or are stuck: PREPARED, or STOPPED (uploading) for long. Room, reason and stream interruptions.', 24, 8, [
          target(task('tiw_record_task_finish_reason', 'reason=~"EXCEPTION|FORCE_STOP|FAILED"'), instant=true, table=true),
          target(task('tiw_record_task_stream_interrupts'), instant=true, table=true),
        ], { sdk_app_id: 'SdkAppId', task_id: 'Task', room_id: 'Room', reason: 'Reason', 'Value #B': 'Interrupts' }, exclude=['Value #A', 'instance', 'pod']),
        timeseries('Upload and replay length', 'How long processing and uploading took (STOPPED to FINISHED as seen; TiwRecordUploadStuck past %d s) and the replay length (TotalTime), p50 over the last hour.' % cfg.recordUploadSeconds, 12, 7, [
          target('histogram_quantile(0.5, sum by (le) (max without (%s) (increase(tiw_record_upload_seconds_bucket{%s}[1h]))))' % [replicas, app], 'upload p50'),
          target('histogram_quantile(0.5, sum by (le) (max without (%s) (increase(tiw_record_duration_seconds_bucket{%s}[1h]))))' % [replicas, app], 'replay p50'),
        ], 's'),
        timeseries('Recording exceptions and video', 'ExceptionCnt increases and result video bytes per hour.', 12, 7, [
          target('sum (max without (%s) (increase(tiw_record_exceptions_total{%s}[1h])))' % [replicas, app], 'exceptions'),
          target('sum (max without (%s) (increase(tiw_record_video_bytes_total{%s}[1h])))' % [replicas, app], 'video bytes'),
        ], 'short'),

        row('Running tasks, all types'),
        timeseries('Running tasks by type', 'What DescribeRunningTasks lists per task type and status (tiw_running_tasks): whiteboard push, real-time recording and document transcoding (TranscodeH5, TranscodeJPG), which are counted here only, not tracked one by one. QUEUED transcodes waiting is the backlog.', 12, 7,
                   [target('sum by (task_type, status) (max without (%s) (tiw_running_tasks{%s}))' % [replicas, app], '{{task_type}} {{status}}')], 'short'),
        timeseries('Oldest queued task by type', 'How long the oldest task of each type has been QUEUED (from its CreateTime). TiwTranscodeBacklog past %d s for a transcode.' % cfg.transcodeBacklogSeconds, 12, 7,
                   [target('time() - min by (task_type) (max without (%s) (tiw_running_tasks_oldest_created_timestamp_seconds{%s, status="QUEUED"}))' % [replicas, app], '{{task_type}}')], 's'),

        row('Tencent Cloud API budget'),
        stat('API up', '1 when the app\'s last Tencent Cloud API call got an answer; 0 after network failures or AuthFailure / ResourceUnavailable / UnauthorizedOperation (tiw_up).', 6, 6,
             [target('tiw_up{%s}' % app, '{{instance}} {{sdk_app_id}}', instant=true)], mappings=upDown('DOWN', 'UP')),
        timeseries('Request rate against the 20/s limit', 'API requests per second per exporter and action. Tencent allows 20 per action and account; each exporter\'s limiter keeps under it (the red line). Exporters sharing an account share the 20.', 9, 6,
                   [target('sum by (instance, action) (rate(tiw_exporter_api_requests_total{%s}[$__rate_interval]))' % sel, '{{instance}} {{action}}')], 'reqps')
        + { fieldConfig+: { defaults+: { custom: { thresholdsStyle: { mode: 'line' } }, thresholds: { mode: 'absolute', steps: [{ color: 'transparent', value: null }, { color: 'red', value: 20 }] } } } },
        timeseries('Requests by action and result', 'API requests per second by action and result code: OK, Tencent\'s error code, or transport (no usable answer).', 9, 6,
                   [target('sum by (action, code) (rate(tiw_exporter_api_requests_total{%s}[$__rate_interval]))' % sel, '{{action}} {{code}}')], 'reqps'),
        timeseries('API latency', 'p50, p95 and p99 of Tencent Cloud API request durations per action (each attempt).', 12, 7, [
          target('histogram_quantile(%s, sum by (le, action) (rate(tiw_exporter_api_request_duration_seconds_bucket{%s}[$__rate_interval])))' % [q, sel], 'p%s {{action}}' % std.strReplace(q, '0.', ''))
          for q in ['0.5', '0.95', '0.99']
        ], 's'),
        timeseries('Polling', 'How long a full sweep over unfinished tasks takes (grows past poll.interval when the API budget is the limit; TiwPollingBehind past %d s), the time since each app\'s last answered DescribeWhiteboardPush, and since its last complete DescribeRunningTasks pass (an end without a callback is noticed at the next pass).' % (cfg.pollInterval * cfg.pollingBehindFactor), 12, 7, [
          target('tiw_exporter_poll_sweep_duration_seconds{%s}' % sel, 'sweep {{instance}}'),
          target('time() - tiw_exporter_last_poll_success_timestamp_seconds{%s}' % app, 'since last poll {{instance}} {{sdk_app_id}}'),
          target('time() - tiw_exporter_last_discovery_success_timestamp_seconds{%s}' % app, 'since last running list {{instance}} {{sdk_app_id}}'),
        ], 's'),

        row('Exporter'),
        stat('Exporter up', 'Prometheus\'s scrape of the exporter (up).', 4, 5,
             [target('up{%s}' % sel, '{{instance}}', instant=true)], mappings=upDown('DOWN', 'UP')),
        table('Build', 'Version and git revision of each running exporter.', 6, 5,
              [target('tiw_exporter_build_info{%s}' % sel, instant=true, table=true)], {}, exclude=['Value']),
        stat('Config loaded', 'Whether the last configuration load or reload succeeded, and how long ago the configuration in force was loaded.', 5, 5,
             [target('tiw_exporter_config_last_reload_successful{%s}' % sel, '{{instance}}', instant=true)], mappings=upDown('FAILED', 'OK')),
        stat('Config age', 'When the configuration in force was loaded (tiw_exporter_config_last_reload_success_timestamp_seconds).', 4, 5,
             [target('tiw_exporter_config_last_reload_success_timestamp_seconds{%s} * 1000' % sel, '{{instance}}', instant=true)], 'dateTimeFromNow'),
        stat('Store writes', '1 while the store writes; 0 means callbacks are answered 503 (disk full?).', 5, 5,
             [target('tiw_exporter_store_last_write_successful{%s}' % sel, '{{instance}}', instant=true)], mappings=upDown('FAILING', 'OK')),
        timeseries('Store', 'p99 of one store transaction (group commit with fsync), and failed store operations per second.', 8, 6, [
          target('histogram_quantile(0.99, sum by (le, instance) (rate(tiw_exporter_store_write_duration_seconds_bucket{%s}[$__rate_interval])))' % sel, 'write p99 {{instance}}'),
          target('sum by (instance, op) (rate(tiw_exporter_store_errors_total{%s}[$__rate_interval]))' % sel, 'errors {{instance}} {{op}}'),
        ], 's')
        + { fieldConfig+: { overrides: [{ matcher: { id: 'byFrameRefID', options: 'B' }, properties: [{ id: 'unit', value: 'ops' }] }] } },
        timeseries('Requests refused', 'Requests the server\'s limits refused, by handler and reason: callbacks past callback.max_in_flight, scrapes past --web.max-requests, bodies slower than --web.read-timeout, password checks past the bcrypt slots.', 8, 6,
                   [target('sum by (instance, handler, reason) (rate(tiw_exporter_http_requests_refused_total{%s}[$__rate_interval]))' % sel, '{{instance}} {{handler}} {{reason}}')], 'reqps'),
        timeseries('Memory and CPU', 'Resident memory and CPU of the exporter process.', 8, 6, [
          target('process_resident_memory_bytes{%s}' % sel, 'RSS {{instance}}'),
          target('rate(process_cpu_seconds_total{%s}[$__rate_interval])' % sel, 'CPU {{instance}}'),
        ], 'bytes')
        + { fieldConfig+: { overrides: [{ matcher: { id: 'byFrameRefID', options: 'B' }, properties: [{ id: 'unit', value: 'percentunit' }] }] } },
      ]),
    },
  },
}
