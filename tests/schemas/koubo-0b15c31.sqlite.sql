-- koubo's job database as the previous release (commit 0b15c31) created it on sqlite:
-- its models' DDL, compiled by SQLAlchemy; frozen here so that the upgrade test does not depend on today's code.

CREATE TABLE assets (
	id VARCHAR(32) NOT NULL, 
	kind VARCHAR(8) NOT NULL, 
	name VARCHAR(255) NOT NULL, 
	sha256 VARCHAR(64) NOT NULL, 
	size BIGINT NOT NULL, 
	duration DOUBLE NOT NULL, 
	container VARCHAR(64) NOT NULL, 
	stored_name VARCHAR(128) NOT NULL, 
	created_at DATETIME NOT NULL, 
	PRIMARY KEY (id), 
	UNIQUE (sha256, kind)
);

CREATE TABLE batches (
	id VARCHAR(32) NOT NULL, 
	created_at DATETIME NOT NULL, 
	PRIMARY KEY (id)
);

CREATE TABLE workers (
	name VARCHAR(255) NOT NULL, 
	host VARCHAR(255) NOT NULL, 
	pid INTEGER NOT NULL, 
	device VARCHAR(8) NOT NULL, 
	engines JSON NOT NULL, 
	concurrency INTEGER NOT NULL, 
	started_at DATETIME NOT NULL, 
	heartbeat_at DATETIME NOT NULL, 
	stopped_at DATETIME, 
	PRIMARY KEY (name)
);

CREATE TABLE jobs (
	seq INTEGER NOT NULL, 
	id VARCHAR(32) NOT NULL, 
	batch_id VARCHAR(32), 
	audio_id VARCHAR(32) NOT NULL, 
	video_id VARCHAR(32) NOT NULL, 
	status VARCHAR(16) NOT NULL, 
	stage VARCHAR(32), 
	progress DOUBLE NOT NULL, 
	params JSON NOT NULL, 
	timings JSON, 
	report JSON, 
	error_code VARCHAR(64), 
	error_en TEXT, 
	error_zh TEXT, 
	output_name VARCHAR(255) NOT NULL, 
	output_path VARCHAR(512), 
	output_size BIGINT, 
	attempts INTEGER NOT NULL, 
	worker VARCHAR(255), 
	worker_name VARCHAR(255), 
	engine VARCHAR(32), 
	device VARCHAR(8), 
	cancel_requested BOOLEAN NOT NULL, 
	heartbeat_at DATETIME, 
	created_at DATETIME NOT NULL, 
	queued_at DATETIME NOT NULL, 
	started_at DATETIME, 
	finished_at DATETIME, 
	notify_state VARCHAR(16), 
	notify_attempts INTEGER, 
	notify_next_at DATETIME, 
	PRIMARY KEY (seq), 
	UNIQUE (id), 
	FOREIGN KEY(batch_id) REFERENCES batches (id), 
	FOREIGN KEY(audio_id) REFERENCES assets (id), 
	FOREIGN KEY(video_id) REFERENCES assets (id)
);

CREATE INDEX ix_jobs_batch_id ON jobs (batch_id);

CREATE INDEX ix_jobs_notify ON jobs (notify_state, notify_next_at);

CREATE INDEX ix_jobs_status_queue_order ON jobs (status, queued_at, seq);
