CREATE STREAM readings (sensor STRING, ts BIGINT, v DOUBLE)
  WITH (timestamp = 'ts', watermark = '2 seconds');

INSERT INTO avg_1s
SELECT sensor, window_start, window_end, avg(v) AS avg_v, count(*) AS n, min(v) AS lo, max(v) AS hi
FROM readings
GROUP BY sensor, TUMBLE(ts, INTERVAL '1' SECOND);
