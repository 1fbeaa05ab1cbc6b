Console.WriteLine("fiber");
