-- The acc tables for Kamailio's db_sqlite (WITH_SQLITE in kamailio.cfg): Kamailio's own
-- schema for acc and missed_calls, acc_cdrs with the cdr_extra columns cdrtrace reads,
-- and each table's version row. Create the database with: sqlite3 acc.db < sqlite.sql
CREATE TABLE version (id INTEGER PRIMARY KEY AUTOINCREMENT,
    table_name VARCHAR(32) NOT NULL, table_version INTEGER DEFAULT 0 NOT NULL);
INSERT INTO version (table_name, table_version) VALUES ('acc', 5), ('missed_calls', 4),
    ('acc_cdrs', 2);
CREATE TABLE acc (id INTEGER PRIMARY KEY AUTOINCREMENT,
    method VARCHAR(16) DEFAULT '' NOT NULL, from_tag VARCHAR(128) DEFAULT '' NOT NULL,
    to_tag VARCHAR(128) DEFAULT '' NOT NULL, callid VARCHAR(255) DEFAULT '' NOT NULL,
    sip_code VARCHAR(3) DEFAULT '' NOT NULL, sip_reason VARCHAR(128) DEFAULT '' NOT NULL,
    time TIMESTAMP WITHOUT TIME ZONE NOT NULL, src_user VARCHAR(64), pai VARCHAR(64),
    privacy VARCHAR(64), dst_ouser VARCHAR(64), dst_user VARCHAR(64), diversion VARCHAR(64),
    rang VARCHAR(1), called_domain VARCHAR(128));
CREATE TABLE missed_calls (id INTEGER PRIMARY KEY AUTOINCREMENT,
    method VARCHAR(16) DEFAULT '' NOT NULL, from_tag VARCHAR(128) DEFAULT '' NOT NULL,
    to_tag VARCHAR(128) DEFAULT '' NOT NULL, callid VARCHAR(255) DEFAULT '' NOT NULL,
    sip_code VARCHAR(3) DEFAULT '' NOT NULL, sip_reason VARCHAR(128) DEFAULT '' NOT NULL,
    time TIMESTAMP WITHOUT TIME ZONE NOT NULL, src_user VARCHAR(64), pai VARCHAR(64),
    privacy VARCHAR(64), dst_ouser VARCHAR(64), dst_user VARCHAR(64), diversion VARCHAR(64),
    rang VARCHAR(1), called_domain VARCHAR(128));
CREATE TABLE acc_cdrs (id INTEGER PRIMARY KEY AUTOINCREMENT,
    start_time TIMESTAMP WITHOUT TIME ZONE DEFAULT '2000-01-01 00:00:00' NOT NULL,
    end_time TIMESTAMP WITHOUT TIME ZONE DEFAULT '2000-01-01 00:00:00' NOT NULL,
    duration REAL DEFAULT 0 NOT NULL, callid VARCHAR(255), invite_time VARCHAR(16),
    src_user VARCHAR(64), pai VARCHAR(64), privacy VARCHAR(64), dst_ouser VARCHAR(64),
    dst_user VARCHAR(64), diversion VARCHAR(64), sip_code VARCHAR(3), sip_reason VARCHAR(128),
    rang VARCHAR(1), called_domain VARCHAR(128));
