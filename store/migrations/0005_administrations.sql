-- Administrations (legal / accounting entities), e-mail templates, products and orders.
-- Nothing here is ever deleted: administrations, templates and products are deactivated
-- (`active` = false), orders end with status 'terminated'. Every change is audited by the API.

-- E-mail templates with {merge_fields} (rules/templates.hpp). The API checks the fields when a
-- template is saved and keeps the list it found in `merge_fields`.
CREATE TABLE templates (
  id           bigserial PRIMARY KEY,
  name         text NOT NULL CHECK (name <> ''),
  subject      text NOT NULL CHECK (subject <> '' AND subject !~ '[\r\n]'),
  html_body    text NOT NULL DEFAULT '',
  text_body    text NOT NULL DEFAULT '',
  merge_fields text[] NOT NULL DEFAULT '{}',
  active       boolean NOT NULL DEFAULT true,
  created_at   timestamptz NOT NULL DEFAULT now(),
  updated_at   timestamptz NOT NULL DEFAULT now(),
  CHECK (html_body <> '' OR text_body <> '')
);
CREATE UNIQUE INDEX templates_name_key ON templates (lower(name));

-- Text fields are '' when not filled in; the API stores them normalised (see the CHECKs).
CREATE TABLE administrations (
  id                  bigserial PRIMARY KEY,
  name                text NOT NULL CHECK (name <> ''),
  address             text NOT NULL DEFAULT '',          -- street and house number
  postal_code         text NOT NULL DEFAULT '',          -- NL: '1234AB', as contacts store it
  city                text NOT NULL DEFAULT '',
  country             text NOT NULL DEFAULT 'NL' CHECK (country ~ '^[A-Z]{2}$'),
  kvk_number          text NOT NULL DEFAULT '' CHECK (kvk_number = '' OR kvk_number ~ '^[0-9]{8}$'),
  vat_number          text NOT NULL DEFAULT '' CHECK (vat_number = '' OR vat_number ~ '^NL[0-9]{9}B[0-9]{2}$'),
  iban                text NOT NULL DEFAULT '' CHECK (iban = '' OR iban ~ '^[A-Z]{2}[0-9]{2}[A-Z0-9]{11,30}$'),
  email               text NOT NULL DEFAULT '',
  website             text NOT NULL DEFAULT '',
  -- The mailbox that sends this administration's reports and invoices; NULL: the primary mailbox
  -- at send time (so changing the primary mailbox moves every administration that did not choose).
  sender_mailbox_id   bigint REFERENCES mailboxes (id),
  bcc_self            boolean NOT NULL DEFAULT false,    -- BCC every mail sent for it to the sender
  -- The four invoice mails (seed: "Administraties").
  invoice_transfer_template_id     bigint REFERENCES templates (id),  -- first invoice, paid by transfer
  invoice_direct_debit_template_id bigint REFERENCES templates (id),  -- first invoice, direct debit
  reminder_template_id             bigint REFERENCES templates (id),
  dunning_template_id              bigint REFERENCES templates (id),
  active              boolean NOT NULL DEFAULT true,
  created_at          timestamptz NOT NULL DEFAULT now(),
  updated_at          timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX administrations_name_key ON administrations (lower(name));
CREATE INDEX administrations_sender ON administrations (sender_mailbox_id);

-- Products belong to one administration. Name and code are unique over all products (not per
-- administration): contacts are shared by every administration and products are picked by
-- name or code in CRM screens and group filters, so two products must never look the same.
-- `duration` never changes after creation (a trigger refuses it too); `price_per` must fit it
-- (rules/product.hpp). Prices are integer euro cents; vat_percentage NULL means no VAT applies.
CREATE TABLE products (
  id                bigserial PRIMARY KEY,
  administration_id bigint NOT NULL REFERENCES administrations (id),
  name              text NOT NULL CHECK (name <> ''),
  code              text NOT NULL CHECK (code <> ''),
  description       text NOT NULL DEFAULT '',
  duration          text NOT NULL CHECK (duration IN ('none', 'month', 'quarter', 'half_year', 'year', 'until_cancelled')),
  price_per         text NOT NULL CHECK (price_per IN ('none', 'month', 'quarter', 'half_year', 'year')),
  price_cents       bigint NOT NULL,
  vat_percentage    integer CHECK (vat_percentage BETWEEN 0 AND 100),
  active            boolean NOT NULL DEFAULT true,
  created_at        timestamptz NOT NULL DEFAULT now(),
  updated_at        timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX products_name_key ON products (lower(name));
CREATE UNIQUE INDEX products_code_key ON products (lower(code));
CREATE INDEX products_administration ON products (administration_id);

CREATE FUNCTION products_duration_immutable() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF NEW.duration IS DISTINCT FROM OLD.duration THEN
    RAISE EXCEPTION 'the duration of a product cannot change (product %)', OLD.id USING ERRCODE = 'check_violation';
  END IF;
  RETURN NEW;
END $$;
CREATE TRIGGER products_duration_immutable BEFORE UPDATE OF duration ON products
  FOR EACH ROW EXECUTE FUNCTION products_duration_immutable();

-- An order links a product to a contact. Status (seed: Econobis orders): concept -> active ->
-- terminated; a terminated order has an end date.
CREATE TABLE orders (
  id          bigserial PRIMARY KEY,
  contact_id  bigint NOT NULL REFERENCES contacts (id),
  product_id  bigint NOT NULL REFERENCES products (id),
  quantity    integer NOT NULL DEFAULT 1 CHECK (quantity BETWEEN 1 AND 1000000),
  start_date  date NOT NULL,
  end_date    date CHECK (end_date >= start_date),
  status      text NOT NULL DEFAULT 'concept' CHECK (status IN ('concept', 'active', 'terminated')),
  created_at  timestamptz NOT NULL DEFAULT now(),
  updated_at  timestamptz NOT NULL DEFAULT now(),
  CHECK (status <> 'terminated' OR end_date IS NOT NULL)
);
CREATE INDEX orders_contact ON orders (contact_id);
CREATE INDEX orders_product ON orders (product_id);
