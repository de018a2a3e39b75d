CREATE STREAM readings (sensor STRING, ts BIGINT, v BIGINT) WITH (timestamp = 'ts');

INSERT INTO per_three
SELECT sensor, sum(v) AS total, count(*) AS n, window_start, window_end
FROM readings
GROUP BY sensor, COUNT_WINDOW(3);

INSERT INTO last_three_every_one
SELECT sensor, sum(v) AS total, count(*) AS n
FROM readings
GROUP BY sensor, COUNT_WINDOW(3, 1);
