CREATE STREAM a (id BIGINT, ts BIGINT) WITH (timestamp = 'ts');
CREATE STREAM b (id BIGINT, ts BIGINT) WITH (timestamp = 'ts');
INSERT INTO j1 SELECT a.id FROM a JOIN b ON a.id = b.id;
INSERT INTO j2 SELECT id FROM a LEFT SEMI JOIN b ON a.id = b.id;
INSERT INTO j3 SELECT id FROM a JOIN b ON a.id = b.id AND b.ts BETWEEN a.ts AND a.ts + INTERVAL '1' SECOND;
INSERT INTO j4 SELECT a.id FROM a LEFT JOIN b ON a.id = b.id;
