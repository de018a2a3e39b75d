CREATE STREAM machines (machine STRING, ts BIGINT, state BIGINT, temp DOUBLE)
  WITH (timestamp = 'ts', watermark = '1 second');

-- State changes per machine, in event time even when events arrive out of order.
INSERT INTO transitions
SELECT machine, ts, lag(state) OVER (PARTITION BY machine) AS previous, state,
       delta(temp) OVER (PARTITION BY machine) AS temp_change,
       lag(temp, 2, -1.0) OVER (PARTITION BY machine) AS temp_two_back
FROM machines
WHERE changed(state) OVER (PARTITION BY machine);
