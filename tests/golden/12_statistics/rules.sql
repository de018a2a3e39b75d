CREATE STREAM m (k STRING, ts BIGINT, x DOUBLE, y DOUBLE) WITH (timestamp = 'ts');

INSERT INTO stats
SELECT k, count(*) AS n, sum(y) AS sum_y, stddev(y) AS sd, variance(y) AS var,
       stddev_pop(y) AS sd_pop, percentile(y, 0.5) AS p50, median(y) AS med,
       first_value(y) AS first_y, last_value(y) AS last_y,
       regr_slope(y, x) AS slope, regr_intercept(y, x) AS intercept,
       count(DISTINCT x) AS distinct_x, max(y) - min(y) AS spread
FROM m
GROUP BY k, TUMBLE(ts, INTERVAL '1' MINUTE)
HAVING count(*) >= 3;
