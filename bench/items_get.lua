-- GET /v1/items/{id} with the id random in 1..10000.
math.randomseed(os.time())
request = function()
  return wrk.format("GET", "/v1/items/" .. math.random(1, 10000))
end
