-- wrk script for scripts/bench.sh: replays pre-signed JSON bodies against one route.
--
-- Environment:
--   BODIES      file with one JSON request body per line (written by `bench-gen bodies`)
--   ROUTE_PATH  path to POST to, e.g. /generate_pro_proof
--   THREADS     the wrk -t value (wrk does not tell the script how many threads it starts)
--   ONION       "1" when the lines are hex-encoded onion requests for /oxen/v4/lsrpc; their
--               answers are encrypted, so only the HTTP status is checked
--
-- The lines are dealt out round-robin: thread k of n takes lines k+1, k+1+n, k+1+2n, ... so
-- every thread starts at a different offset and no two threads ever send the same body. A
-- thread only comes back to its first body once it has sent all of its share ("wraps"); for
-- add_pro_payment that would claim a payment twice, so bench.sh generates more bodies than a
-- run can use and the wrap count is printed to show whether that held.
--
-- A response counts as an error unless it is HTTP 200 and its JSON ends with a top-level
-- `"status":0` (the server writes keys in sorted order, so `status` is the last key).

local threads = {}
local thread_count = 0

function setup(thread)
   thread:set("thread_index", thread_count)
   thread_count = thread_count + 1
   table.insert(threads, thread)
end

local bodies = {}
local cursor = 1
local headers = { ["Content-Type"] = "application/json" }
local path
local onion = false

local function unhex(h)
   return (h:gsub("..", function(pair) return string.char(tonumber(pair, 16)) end))
end

errors = 0
wraps = 0
sample_error = nil

function init(args)
   local file = os.getenv("BODIES")
   path = os.getenv("ROUTE_PATH")
   onion = os.getenv("ONION") == "1"
   if onion then
      headers = { ["Content-Type"] = "application/octet-stream" }
   end
   thread_total = tonumber(os.getenv("THREADS") or "")
   if not file or not path or not thread_total then
      error("BODIES, ROUTE_PATH and THREADS must be set")
   end
   local handle = assert(io.open(file, "r"))
   local n = 0
   for line in handle:lines() do
      if line ~= "" then
         if n % thread_total == thread_index then
            bodies[#bodies + 1] = onion and unhex(line) or line
         end
         n = n + 1
      end
   end
   handle:close()
   if #bodies == 0 then
      error("no bodies for thread " .. thread_index .. " in " .. file)
   end
end

function request()
   local body = bodies[cursor]
   cursor = cursor + 1
   if cursor > #bodies then
      cursor = 1
      wraps = wraps + 1
   end
   return wrk.format("POST", path, headers, body)
end

function response(status, hdrs, body)
   if status ~= 200 or (not onion and not string.find(body, '"status":0}%s*$')) then
      errors = errors + 1
      if sample_error == nil then
         sample_error = "HTTP " .. status .. " " .. string.sub(body, 1, 400)
      end
   end
end

function done(summary, latency, requests)
   local total_errors, total_wraps, sample = 0, 0, nil
   for _, t in ipairs(threads) do
      total_errors = total_errors + t:get("errors")
      total_wraps = total_wraps + t:get("wraps")
      sample = sample or t:get("sample_error")
   end
   io.write(string.format("bench_errors=%d\n", total_errors))
   io.write(string.format("bench_wraps=%d\n", total_wraps))
   if sample then
      io.write("bench_sample_error=" .. string.gsub(sample, "\n", " ") .. "\n")
   end
end
