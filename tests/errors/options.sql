CREATE STREAM a (x BIGINT, ts BIGINT) WITH (timestamp = 'tss', watermrk = '2 seconds');
CREATE STREAM b (x BIGINT, ts BIGINT) WITH (timestamp = 'ts', watermark = '2 fortnights');
CREATE STREAM c (x BIGINT, ts BLOB) WITH (time = 'event');
CREATE STREAM a (y BIGINT);
CREATE STREAM d (x BIGINT, ts BIGINT) WITH (timestamp = 'ts', order = 'sideways');
INSERT INTO o SELECT * FROM b;
