CREATE STREAM readings (sensor_id BIGINT, ts BIGINT, value DOUBLE) WITH (timestamp = 'ts');
INSERT INTO a SELECT sensr_id, value FROM readings;
INSERT INTO b SELECT * FROM readngs;
INSERT INTO c SELECT uper(value), sqrt(value, 2) FROM readings;
INSERT INTO d SELECT foo FROM readings;
