-- Connector settings a node refuses are refused by weir check too, at the option.
CREATE STREAM a WITH (connector = 'mqtt', topic = 'a/#', qos = '3');
CREATE STREAM b WITH (connector = 'mqtt', url = 'mqtt://127.0.0.1:1883');
CREATE STREAM c WITH (format = 'avro');
CREATE STREAM d WITH (connector = 'nats', topic = 'd', durable = 'x');
CREATE STREAM e WITH (format = 'csv', delimiter = ';;');
CREATE STREAM f WITH (connector = 'mqtt', topic = 'f', session = 'persistent');
CREATE STREAM g WITH (connector = 'amqp', url = 'amqps://rabbit:5671/%2f', exchange = 'g');
INSERT INTO out SELECT * FROM a;
