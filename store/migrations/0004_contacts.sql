-- CRM contacts and groups (issue 3; seed: static, dynamic and composite groups).
--
-- Contacts are never deleted: `archived` hides a contact from lists and from every group's
-- resolution while keeping its history (messages, orders, audit rows) intact.
-- E-mail addresses live in their own table: a contact has any number, exactly one of them primary
-- (checked when the transaction commits), and `email_match_key` is what inbound mail is matched on.

CREATE TABLE contacts (
  id                    bigserial PRIMARY KEY,
  type                  text NOT NULL CHECK (type IN ('person', 'organisation')),
  -- person: name parts (infix = tussenvoegsel: "van der")
  title                 text NOT NULL DEFAULT '',
  initials              text NOT NULL DEFAULT '',
  first_name            text NOT NULL DEFAULT '',
  infix                 text NOT NULL DEFAULT '',
  last_name             text NOT NULL DEFAULT '',
  -- organisation
  organisation_name     text NOT NULL DEFAULT '',
  -- [{"number": "+31 6 1234 5678", "label": "mobile"}, ...]
  phones                jsonb NOT NULL DEFAULT '[]'::jsonb CHECK (jsonb_typeof(phones) = 'array'),
  -- address; a Dutch postcode (country NL) is stored normalised: "1234AB" (or "1234")
  street                text NOT NULL DEFAULT '',
  house_number          text NOT NULL DEFAULT '',
  house_number_addition text NOT NULL DEFAULT '',
  postcode              text NOT NULL DEFAULT '',
  city                  text NOT NULL DEFAULT '',
  country               text NOT NULL DEFAULT 'NL' CHECK (country ~ '^[A-Z]{2}$'),
  date_of_birth         date,
  -- free fields: {"key": "value"}, keys [a-z0-9_], string values (limits enforced by the API)
  free_fields           jsonb NOT NULL DEFAULT '{}'::jsonb CHECK (jsonb_typeof(free_fields) = 'object'),
  archived              boolean NOT NULL DEFAULT false,
  created_at            timestamptz NOT NULL DEFAULT now(),
  updated_at            timestamptz NOT NULL DEFAULT now(),
  CHECK (type = 'person' OR (organisation_name <> '' AND date_of_birth IS NULL)),
  CHECK (type = 'organisation' OR last_name <> '' OR first_name <> '')
);
CREATE INDEX contacts_postcode ON contacts (country, postcode COLLATE "C") WHERE NOT archived;
CREATE INDEX contacts_city ON contacts (lower(city)) WHERE NOT archived;
CREATE INDEX contacts_date_of_birth ON contacts (date_of_birth) WHERE NOT archived;

CREATE TABLE contact_emails (
  id              bigserial PRIMARY KEY,
  contact_id      bigint NOT NULL REFERENCES contacts (id),
  address         text NOT NULL CHECK (address <> ''),      -- normal form (rules/address.hpp)
  -- email_match_key(address): the address lower-cased (ASCII only, as rules/address does).
  email_match_key text NOT NULL CHECK (email_match_key = lower(address COLLATE "C")),
  is_primary      boolean NOT NULL DEFAULT false,
  position        integer NOT NULL,                          -- order as entered
  UNIQUE (contact_id, email_match_key),
  UNIQUE (contact_id, position)
);
-- Inbound mail is linked by this key; several contacts may share an address (a household).
CREATE INDEX contact_emails_match_key ON contact_emails (email_match_key);
CREATE UNIQUE INDEX contact_emails_one_primary ON contact_emails (contact_id) WHERE is_primary;

-- "Exactly one primary when any exist", checked at commit so that a list can be replaced row by row.
CREATE FUNCTION contact_emails_check_primary() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
  cid bigint := CASE WHEN TG_OP = 'DELETE' THEN OLD.contact_id ELSE NEW.contact_id END;
BEGIN
  IF EXISTS (SELECT 1 FROM contact_emails WHERE contact_id = cid)
     AND NOT EXISTS (SELECT 1 FROM contact_emails WHERE contact_id = cid AND is_primary) THEN
    RAISE EXCEPTION 'contact % has e-mail addresses but no primary one', cid USING ERRCODE = 'check_violation';
  END IF;
  RETURN NULL;
END $$;
CREATE CONSTRAINT TRIGGER contact_emails_one_primary_at_commit AFTER INSERT OR UPDATE OR DELETE ON contact_emails
  DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION contact_emails_check_primary();

-- Groups. kind never changes after creation.
--   static:    members listed in group_contacts
--   dynamic:   `filter` = {"match": "all"|"any", "conditions": [{"field", "op", "values": [text...]}]}
--              (rules/groups.hpp), evaluated in SQL each time the group is resolved
--   composite: `operation` over the groups in group_composite_members (any kind, nested)
-- A group never contains itself, through composite members or dynamic "member_of" conditions;
-- the API checks that under an advisory lock (store/groups.hpp group_graph_lock).
-- Portal flags: "zichtbaar op portaal" (visible_on_portal) and "veranderen op portaal"
-- (changeable_on_portal: contacts may join or leave themselves), which only a static group can
-- offer, and only when it is visible.
CREATE TABLE contact_groups (
  id                   bigserial PRIMARY KEY,
  name                 text NOT NULL CHECK (name = btrim(name) AND name <> ''),
  description          text NOT NULL DEFAULT '',
  kind                 text NOT NULL CHECK (kind IN ('static', 'dynamic', 'composite')),
  visible_on_portal    boolean NOT NULL DEFAULT false,
  changeable_on_portal boolean NOT NULL DEFAULT false,
  filter               jsonb,
  operation            text CHECK (operation IN ('union', 'intersection')),
  created_at           timestamptz NOT NULL DEFAULT now(),
  updated_at           timestamptz NOT NULL DEFAULT now(),
  CHECK ((kind = 'dynamic') = (filter IS NOT NULL)),
  CHECK ((kind = 'composite') = (operation IS NOT NULL)),
  CHECK (NOT changeable_on_portal OR (kind = 'static' AND visible_on_portal))
);
CREATE UNIQUE INDEX contact_groups_name ON contact_groups (lower(name));

CREATE TABLE group_contacts (
  group_id   bigint NOT NULL REFERENCES contact_groups (id),
  contact_id bigint NOT NULL REFERENCES contacts (id),
  PRIMARY KEY (group_id, contact_id)
);
CREATE INDEX group_contacts_contact ON group_contacts (contact_id);

CREATE TABLE group_composite_members (
  group_id        bigint NOT NULL REFERENCES contact_groups (id),
  member_group_id bigint NOT NULL REFERENCES contact_groups (id),
  PRIMARY KEY (group_id, member_group_id),
  CHECK (group_id <> member_group_id)
);
CREATE INDEX group_composite_members_member ON group_composite_members (member_group_id);
