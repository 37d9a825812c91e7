from airflow_parallelrun import ClaimLedger

released = ClaimLedger("/data/incoming/_parallelrun_claims").release(["/data/incoming/a.png"])
print("returned to the pool:", released)
