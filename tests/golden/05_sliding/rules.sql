CREATE STREAM readings (sensor STRING, ts BIGINT, v DOUBLE) WITH (timestamp = 'ts', watermark = '1 second');

-- For every reading, the average of the sensor's readings in the 2 seconds up to it.
INSERT INTO moving
SELECT sensor, window_end AS at, avg(v) AS moving_avg, count(*) AS n
FROM readings
GROUP BY sensor, SLIDING(ts, INTERVAL '2' SECOND);
