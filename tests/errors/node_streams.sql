-- weir check --node
-- A node refuses what `weir run` takes: streams that would open files on the node's disk.
CREATE STREAM recorded WITH (connector = 'file', path = '/etc/passwd');
CREATE STREAM out WITH (connector = 'file', path = 'out.jsonl');
INSERT INTO out SELECT * FROM recorded;
