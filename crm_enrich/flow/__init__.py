"""One record's path, in order:

intake       an event becomes a queued job (every way in uses it)
record       the record as Salesforce has it: read in a batch, checked
enrich       the person at Clodura, and the field map's sources
reveal       a missing email or phone: Clodura's reveal, Clearout's finder
verify       the email's verdict: Clodura standard or deep, Clearout
write_back   the field map's changes, queued for a batched write
person       the Contact/Lead sequence of those steps
account      an Account's own job: the company at Clodura
company_domain a domain for a company name (Clearout's autocomplete)
lead_company a Lead's own company, when the person match does not name it
signals      an Account's job posts and news, when mapped
awaiting     results that come later (callbacks), and the sweeper over them
callbacks    the signed callback URL, and storing a result once
parked       resuming jobs held for quota or credits
run          one owner of a job's run: lock, dispatch, exception → state
"""
