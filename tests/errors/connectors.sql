-- Connector options: each connector takes its own, and unknown ones get a did-you-mean.
CREATE STREAM a WITH (connector = 'mqtt', topic = 'a/#', exchange = 'x');
CREATE STREAM b WITH (connector = 'amqp', exchange = 'x', topik = 'k');
CREATE STREAM c WITH (connector = 'mqqt', topic = 'c');
INSERT INTO d SELECT * FROM a;
