-- weir check --node --delivery exactly_once
-- A guarantee the connectors cannot give is refused before install, naming what to change.
CREATE STREAM plant WITH (connector = 'mqtt', topic = 'plant/#', qos = '1');
CREATE STREAM lines WITH (connector = 'nats', topic = 'lines');
CREATE STREAM alerts WITH (connector = 'amqp', exchange = 'alerts');
INSERT INTO alerts SELECT * FROM plant;
INSERT INTO alerts SELECT * FROM lines;
