-- The window syntaxes Flink users write: window table functions and group window functions.
CREATE TABLE bids (item STRING, price DOUBLE, ts BIGINT, WATERMARK FOR ts AS ts - INTERVAL '1' SECOND);

INSERT INTO tumbling
SELECT window_start, window_end, window_time, item, sum(price) AS total, count(*) AS n
FROM TABLE(TUMBLE(TABLE bids, DESCRIPTOR(ts), INTERVAL '10' SECOND))
GROUP BY window_start, window_end, item;

INSERT INTO hopping
SELECT window_start, window_end, sum(price) AS total
FROM TABLE(HOP(TABLE bids, DESCRIPTOR(ts), INTERVAL '5' SECOND, INTERVAL '10' SECOND))
GROUP BY window_start, window_end;

INSERT INTO sessions
SELECT window_start, window_end, item, count(*) AS n
FROM TABLE(SESSION(TABLE bids PARTITION BY item, DESCRIPTOR(ts), INTERVAL '5' SECOND))
GROUP BY item, window_start, window_end;

INSERT INTO legacy
SELECT item, TUMBLE_START(ts, INTERVAL '10' SECOND) AS wstart, TUMBLE_END(ts, INTERVAL '10' SECOND) AS wend,
       TUMBLE_ROWTIME(ts, INTERVAL '10' SECOND) AS wtime, max(price) AS top
FROM bids
GROUP BY TUMBLE(ts, INTERVAL '10' SECOND), item;
