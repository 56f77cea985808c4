"""The providers: Clodura and Clearout clients, how their calls fail
(errors), the shared rate limiter, the response cache, and quota, credits
and the one price table (quota)."""
