"""The Hugging Face Space's serving code (app.py wires it): the page's events (ui), the verdict component
(components), the upload rules (uploads, guard), batches (batch), the REST route (rest), the model gate and
request limits every route shares (serving), and start-up (startup). The library it serves is the parent
package; nothing in the library imports from here."""
