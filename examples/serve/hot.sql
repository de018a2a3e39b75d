-- Readings arrive on the node's embedded topic 'readings' (MQTT on port 1884, or
-- POST /v1/streams/readings/events); hot readings go to the embedded topic 'hot'.
CREATE STREAM readings (sensor STRING, temp DOUBLE) WITH (topic = 'readings');

INSERT INTO hot
SELECT sensor, temp
FROM readings
WHERE temp > 30;
