-- Connector settings a node refuses are refused by weir check too, at the option.
CREATE STREAM a WITH (connector = 'mqtt', topic = 'a/#', qos = '3');
CREATE STREAM b WITH (connector = 'mqtt', url = 'mqtt://127.0.0.1:1883');
CREATE STREAM c WITH (format = 'avro');
CREATE STREAM d WITH (connector = 'nats', topic = 'd', durable = 'x');
CREATE STREAM e WITH (format = 'csv', delimiter = ';;');
CREATE STREAM f WITH (connector = 'mqtt', topic = 'f', session = 'persistent');
CREATE STREAM g WITH (connector = 'amqp', url = 'amqp://rabbit:5672/%2f', exchange = 'g', ca_file = '/etc/ca.pem');
CREATE STREAM h WITH (connector = 'mqtt', url = 'mqtts://broker', topic = 'h', ca_file = '../ca.pem', cert_file = '/etc/c.pem');
CREATE STREAM i WITH (connector = 'nats', url = 'nats://u:p@n:4222', topic = 'i', token = 't');
CREATE STREAM j WITH (connector = 'kafka', url = 'kafka://u:p@k:9092', topic = 'j');
INSERT INTO out SELECT * FROM a;
