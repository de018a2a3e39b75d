CREATE STREAM readings (ts BIGINT, v BIGINT) WITH (timestamp = 'ts');
CREATE STREAM alarms (ts BIGINT, level BIGINT) WITH (timestamp = 'ts');

-- Every reading from 2 s before to 3 s after an alarm, once, however many alarms cover it
-- (no key: every reading against every alarm).
INSERT INTO recorded
SELECT ts, v FROM readings AS r
LEFT SEMI JOIN alarms AS a
  ON a.ts BETWEEN r.ts - INTERVAL '3' SECOND AND r.ts + INTERVAL '2' SECOND
 AND a.level > 1;

-- The recorded readings are not late for a window downstream: the semi join holds its
-- watermark back by its upper bound.
INSERT INTO recorded_per_5s
SELECT window_start, count(*) AS n, sum(v) AS total FROM recorded
GROUP BY TUMBLE(ts, INTERVAL '5' SECOND);
