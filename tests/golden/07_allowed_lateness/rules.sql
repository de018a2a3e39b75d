CREATE STREAM readings (sensor STRING, ts BIGINT, v BIGINT)
  WITH (timestamp = 'ts', allowed_lateness = '2 seconds');

-- Late events within 2 s of a window's end update its result; later ones are side output.
INSERT INTO counts
SELECT sensor, window_start, count(*) AS n, sum(v) AS total
FROM readings
GROUP BY sensor, TUMBLE(ts, INTERVAL '1' SECOND);
