CREATE STREAM clicks (user STRING, ts BIGINT) WITH (timestamp = 'ts', watermark = '500 ms');

-- A session ends after 1 s without a click; out-of-order clicks merge sessions.
INSERT INTO sessions
SELECT user, window_start, window_end, count(*) AS clicks
FROM clicks
GROUP BY user, SESSION(ts, INTERVAL '1' SECOND);
