CREATE STREAM bids (item STRING, price DOUBLE, ts BIGINT) WITH (timestamp = 'ts');
INSERT INTO a SELECT item, price FROM TABLE(TUMBLE(TABLE bids, DESCRIPTOR(ts), INTERVAL '10' SECOND));
INSERT INTO b SELECT window_start, sum(price) AS s FROM TABLE(CUMULATE(TABLE bids, DESCRIPTOR(ts), INTERVAL '1' SECOND, INTERVAL '10' SECOND)) GROUP BY window_start, window_end;
INSERT INTO c SELECT item, sum(price) AS s FROM TABLE(TUMBLE(TABLE bids, DESCRIPTOR(ts), INTERVAL '10' SECOND)) GROUP BY item;
INSERT INTO d SELECT window_start, sum(price) AS s FROM TABLE(TUMBLE(TABLE bids, DESCRIPTOR(price), INTERVAL '10' SECOND)) GROUP BY window_start, window_end;
INSERT INTO e SELECT item, TUMBLE_START(ts, INTERVAL '10' SECOND) AS w FROM bids;
INSERT INTO f SELECT window_start, count(*) AS n FROM TABLE(SESSION(TABLE bids PARTITION BY item, DESCRIPTOR(ts), INTERVAL '5' SECOND)) GROUP BY window_start, window_end;
INSERT INTO g SELECT window_start, count(*) AS n FROM TABLE(TUMBLE(TABLE bids, ts, INTERVAL '5' SECOND)) GROUP BY window_start, window_end;
