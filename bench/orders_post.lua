-- POST /v1/orders: one line, quantity 1, of a random item in 1..10000, as the user whose
-- access token is in the TOKEN environment variable.
math.randomseed(os.time())
local headers = {
  ["Authorization"] = "Bearer " .. os.getenv("TOKEN"),
  ["Content-Type"] = "application/json",
}
request = function()
  local body = '{"lines": [{"item_id": ' .. math.random(1, 10000) .. ', "quantity": 1}]}'
  return wrk.format("POST", "/v1/orders", headers, body)
end
