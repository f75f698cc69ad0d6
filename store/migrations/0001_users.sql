-- Users, roles and the audit trail: what the first admin (`mailgated user add`) needs.
-- Users are never deleted, only deactivated.

CREATE TABLE users (
  id                   bigserial PRIMARY KEY,
  email                text NOT NULL CHECK (email = lower(btrim(email)) AND email <> ''),
  first_name           text NOT NULL DEFAULT '',
  infix                text NOT NULL DEFAULT '',
  last_name            text NOT NULL DEFAULT '',
  title                text NOT NULL DEFAULT '',
  phone                text NOT NULL DEFAULT '',
  mobile               text NOT NULL DEFAULT '',
  function             text NOT NULL DEFAULT '',
  active               boolean NOT NULL DEFAULT true,
  password_hash        text,
  password_must_change boolean NOT NULL DEFAULT false,
  created_at           timestamptz NOT NULL DEFAULT now(),
  updated_at           timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX users_email_key ON users (email);

CREATE TABLE roles (
  name        text PRIMARY KEY,
  description text NOT NULL
);
INSERT INTO roles (name, description) VALUES
  ('admin', 'Key user: configures mailboxes, users, receivers and templates'),
  ('staff', 'Reads and sends mail, maintains contacts and groups'),
  ('readonly', 'Reads everything it may see, changes nothing');

CREATE TABLE user_roles (
  user_id bigint NOT NULL REFERENCES users (id),
  role    text NOT NULL REFERENCES roles (name),
  PRIMARY KEY (user_id, role)
);

-- The audit trail is append-only: a trigger refuses UPDATE, DELETE and TRUNCATE for everyone,
-- the application included. `changes` holds {"field": {"old": ..., "new": ...}} with secrets masked.
CREATE TABLE audit_log (
  id          bigserial PRIMARY KEY,
  at          timestamptz NOT NULL DEFAULT clock_timestamp(),
  actor_kind  text NOT NULL CHECK (actor_kind IN ('user', 'api_key', 'daemon', 'cli')),
  actor_id    bigint,
  actor_label text NOT NULL DEFAULT '',
  entity      text NOT NULL,
  entity_id   text NOT NULL,
  action      text NOT NULL,
  changes     jsonb NOT NULL DEFAULT '{}'::jsonb
);
CREATE INDEX audit_log_entity ON audit_log (entity, entity_id, at);
CREATE INDEX audit_log_actor ON audit_log (actor_kind, actor_id, at);
CREATE INDEX audit_log_at ON audit_log (at);

CREATE FUNCTION audit_log_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION 'the audit trail is append-only (% refused)', TG_OP USING ERRCODE = 'insufficient_privilege';
END $$;
CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON audit_log
  FOR EACH ROW EXECUTE FUNCTION audit_log_refuse_change();
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
  FOR EACH STATEMENT EXECUTE FUNCTION audit_log_refuse_change();
