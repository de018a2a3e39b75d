CREATE STREAM valves (valve STRING, ts BIGINT, open BOOLEAN) WITH (timestamp = 'ts');

-- Rule 1 keeps the changes of each valve; rule 2 counts them per 10 s window.
INSERT INTO changes
SELECT valve, ts, open
FROM valves
WHERE changed(open) OVER (PARTITION BY valve) AND lag(open) OVER (PARTITION BY valve) IS NOT NULL;

INSERT INTO change_counts
SELECT valve, window_start, count(*) AS changes
FROM changes
GROUP BY valve, TUMBLE(ts, INTERVAL '10' SECOND);
