-- GET /v1/items?limit=20&offset=N with N random over 10,000 seeded items.
math.randomseed(os.time())
request = function()
  return wrk.format("GET", "/v1/items?limit=20&offset=" .. math.random(0, 9980))
end
