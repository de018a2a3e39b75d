-- Benchmark query 2: the average value per sensor over 1-second tumbling windows, in event time.
CREATE STREAM readings (sensor_id BIGINT, ts BIGINT, value DOUBLE, flag BOOLEAN)
  WITH (timestamp = 'ts', watermark = '1 second');

INSERT INTO avg_per_second
SELECT sensor_id, window_start, window_end, avg(value) AS avg_value, count(*) AS n
FROM readings
GROUP BY sensor_id, TUMBLE(ts, INTERVAL '1' SECOND);
