-- No column list: fields are read by name, nested ones by path.
CREATE STREAM telemetry WITH (timestamp = 'time', watermark = '1 second');

INSERT INTO flat
SELECT device.id AS device, device.location.room AS room, readings[1] AS second_reading,
       json_path(payload, '$.status.code') AS code, cardinality(readings) AS n_readings,
       date_format(time, '%Y-%m-%dT%H:%M:%S') AS at
FROM telemetry
WHERE device.location.floor >= 2;
