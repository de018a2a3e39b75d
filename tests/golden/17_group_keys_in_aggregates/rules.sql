CREATE STREAM readings (k STRING, ts BIGINT, v BIGINT) WITH (timestamp = 'ts');

-- Inside an aggregate or its FILTER, a grouping key is each row's value, as in any SQL.
INSERT INTO per_key
SELECT k, window_start, count(k) AS n, max(k) AS top, collect(k) AS ks,
       count(*) FILTER (WHERE k = 'a') AS as_a, sum(CASE WHEN k = 'b' THEN v ELSE 0 END) AS b_total
FROM readings
GROUP BY k, TUMBLE(ts, INTERVAL '1' SECOND);
