-- Flink-style declaration; the stream's key partitions the change functions.
CREATE TABLE doors (door VARCHAR, ts TIMESTAMP, open BOOLEAN)
  WITH ('timestamp' = 'ts', 'key' = 'door', 'watermark' = '1 second');

INSERT INTO door_events
SELECT door, ts, CASE WHEN open THEN 'opened' ELSE 'closed' END AS event
FROM doors
WHERE changed(open);
