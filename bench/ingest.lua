-- wrk script for bench/run's ingest workload: signed WhiteboardPushStarted / WhiteboardPushStopped
-- events, each for a task id no other request uses. TIW's Sign covers only the key and ExpireTime,
-- so one Sign (computed by bench/run and passed as arguments) signs every body.
-- Arguments: <sdk_app_id> <expire_time> <sign>
local threads = {}
local next_id = 0

function setup(thread)
  thread:set("id", next_id)
  next_id = next_id + 1
  table.insert(threads, thread)
end

function init(args)
  app, expire, sign = args[1], args[2], args[3]
  counter, non200 = 0, 0
end

function request()
  counter = counter + 1
  local task = string.format("wrk%02d%012d", id, counter)
  local now = os.time()
  local body
  if counter % 2 == 1 then
    body = string.format('{"EventType":"WhiteboardPushStarted","SdkAppId":%s,"Timestamp":%d,"ExpireTime":%s,"Sign":"%s","EventData":{"TaskId":"%s","RoomId":%d,"PushUserId":"tic_push_user","PushStartTime":%d}}',
      app, now, expire, sign, task, counter % 100000, now - 60)
  else
    body = string.format('{"EventType":"WhiteboardPushStopped","SdkAppId":%s,"Timestamp":%d,"ExpireTime":%s,"Sign":"%s","EventData":{"TaskId":"%s","RoomId":%d,"GroupId":"g","PushUserId":"tic_push_user","FinishReason":"EXCEPTION","PushStartTime":%d,"PushStopTime":%d,"IMSyncTime":%d,"ExceptionCnt":1}}',
      app, now, expire, sign, task, counter % 100000, now - 60, now, now - 60)
  end
  return wrk.format("POST", "/callback", {["Content-Type"] = "application/json"}, body)
end

function response(status, headers, body)
  if status ~= 200 then non200 = non200 + 1 end
end

function done(summary, latency, requests)
  local bad = 0
  for _, t in ipairs(threads) do bad = bad + t:get("non200") end
  io.write(string.format("ingest_script_non200: %d\n", bad))
end
