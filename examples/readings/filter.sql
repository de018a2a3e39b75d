-- Benchmark query 1: readings above 90.
CREATE STREAM readings (sensor_id BIGINT, ts BIGINT, value DOUBLE, flag BOOLEAN)
  WITH (timestamp = 'ts', watermark = '1 second');

INSERT INTO high_readings
SELECT * FROM readings WHERE value > 90.0;
