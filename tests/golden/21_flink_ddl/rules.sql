-- Flink's DDL: a computed column for the time attribute, and its watermark.
CREATE TABLE orders (
  id BIGINT NOT NULL,
  ts_s BIGINT,
  amount DOUBLE,
  rt AS TO_TIMESTAMP_LTZ(ts_s, 0),
  cents AS CAST(amount * 100 AS BIGINT),
  WATERMARK FOR rt AS rt - INTERVAL '5' SECOND
) WITH ('connector' = 'embedded');

INSERT INTO per_minute
SELECT id, window_start, count(*) AS n, sum(cents) AS cents
FROM orders
GROUP BY id, TUMBLE(rt, INTERVAL '1' MINUTE);
