"""The use cases behind the API, called by routes, the fast path and the console alike:
recommendations, scores, similar items, freshness; request words (context, filters, policy)
in the engine's terms. Side effects of an answer shown to a viewer (exposures, list counters)
run in one step that only real API answers take."""
