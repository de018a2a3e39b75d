-- Monitoring a line of machines: state changes, overheating episodes, and how long each
-- machine took to answer a command. One rule feeds the next.

CREATE STREAM telemetry (machine STRING, ts TIMESTAMP, state STRING, temp DOUBLE)
  WITH (timestamp = 'ts', watermark = '2 seconds', key = 'machine');

CREATE STREAM commands (machine STRING, ts TIMESTAMP, command STRING)
  WITH (timestamp = 'ts', watermark = '2 seconds');

-- Every change of state, with the state before it.
INSERT INTO state_changes
SELECT machine, ts, lag(state) AS previous, state
FROM telemetry
WHERE changed(state) AND lag(state) IS NOT NULL;

-- State changes per machine and minute, read from the change stream.
INSERT INTO changes_per_minute
SELECT machine, window_start, count(*) AS changes, collect(state) AS states
FROM state_changes
GROUP BY machine, TUMBLE(ts, INTERVAL '1' MINUTE);

-- Overheating: three or more readings above 80 degrees in a row, within 30 seconds.
INSERT INTO overheating
SELECT machine, started, ended, peak, readings
FROM telemetry
MATCH_RECOGNIZE (
  PARTITION BY machine
  ORDER BY ts
  MEASURES FIRST(H.ts) AS started, LAST(H.ts) AS ended, max(H.temp) AS peak, COUNT(H.*) AS readings
  PATTERN (H{3,}) WITHIN INTERVAL '30' SECOND
  DEFINE H AS H.temp > 80
);

-- How long after a command the machine changed state (within 10 seconds).
INSERT INTO command_latency
SELECT c.machine AS machine, c.command AS command, s.state AS new_state, s.ts - c.ts AS latency_ms
FROM commands AS c
JOIN state_changes AS s
  ON c.machine = s.machine AND s.ts BETWEEN c.ts AND c.ts + INTERVAL '10' SECOND;
