CREATE STREAM readings (sensor STRING, ts BIGINT, v BIGINT) WITH (timestamp = 'ts');

-- Windows of 2 s every 1 s: each event is in two windows.
INSERT INTO sums
SELECT sensor, window_start, window_end, sum(v) AS total
FROM readings
GROUP BY sensor, HOP(ts, INTERVAL '1' SECOND, INTERVAL '2' SECOND);
