/* placeholder: replaced by the daemon's main */
int
main (void)
{
  return 0;
}
