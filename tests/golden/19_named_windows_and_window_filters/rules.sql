CREATE STREAM machines (machine STRING, ts BIGINT, state STRING, temp DOUBLE) WITH (timestamp = 'ts');

-- A named window: every OVER w reads the same PARTITION BY.
INSERT INTO transitions
SELECT machine, ts, lag(state) OVER w AS previous, state
FROM machines
WHERE changed(state) OVER w AND lag(state) OVER w IS NOT NULL
WINDOW w AS (PARTITION BY machine);

-- FILTER on the window keeps events out of it (eKuiper's window filter), like WHERE.
INSERT INTO hot_per_second
SELECT machine, window_start, count(*) AS hot
FROM machines
GROUP BY machine, TUMBLE(ts, INTERVAL '1' SECOND) FILTER (WHERE temp > 80);
