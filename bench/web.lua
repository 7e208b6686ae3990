-- wrk script for bench/web.py: GET the paths listed in a file (one a line, `-- FILE` on wrk's
-- command line), round robin, each thread from its own offset; at the end, one line
-- "WRK-JSON {...}" with the latency percentiles (microseconds) and the counts.
local paths = {}
local counter = 0
local threads = {}

function setup(thread)
  thread:set("id", #threads)
  table.insert(threads, thread)
end

function init(args)
  for line in io.lines(args[1]) do
    if #line > 0 then
      paths[#paths + 1] = line
    end
  end
  counter = (id or 0) * 7919
end

function request()
  counter = counter + 1
  return wrk.format("GET", paths[(counter % #paths) + 1])
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write("WRK-JSON {")
  for _, p in ipairs({50, 90, 95, 99}) do
    io.write(string.format('"p%d_us": %d, ', p, latency:percentile(p)))
  end
  io.write(string.format(
    '"mean_us": %.1f, "max_us": %d, "requests": %d, "duration_us": %d, "bytes": %d, ' ..
    '"non_2xx_3xx": %d, "connect_errors": %d, "read_errors": %d, "write_errors": %d, ' ..
    '"timeouts": %d}\n',
    latency.mean, latency.max, summary.requests, summary.duration, summary.bytes,
    e.status, e.connect, e.read, e.write, e.timeout))
end
